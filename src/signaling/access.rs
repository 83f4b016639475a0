//! The HTTP side of access control: checks the request's `Origin` and the credential its
//! route needs ([`super::routes::Policy`], one table for the whole router) before any
//! handler runs. The rules themselves live in [`crate::auth`].

use super::routes::{Need, Policy};
use super::AppState;
use crate::auth::{AuthError, JoinGrant};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

fn refuse(e: &AuthError) -> Response {
    let status = if e.is_unauthenticated() {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::FORBIDDEN
    };
    let mut resp = (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        e.to_string(),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"tessera\""),
        );
    }
    resp
}

fn header_str<'a>(h: &'a HeaderMap, name: header::HeaderName) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// The bearer token: the `Authorization` header, or where the route allows it (a page a
/// browser navigates to, a media player) a `token` query parameter.
fn credential(req: &axum::extract::Request, query_token: bool) -> Option<&str> {
    crate::auth::bearer(header_str(req.headers(), header::AUTHORIZATION)).or_else(|| {
        query_token
            .then(|| req.uri().query())
            .flatten()
            .and_then(|q| {
                q.split('&')
                    .find_map(|kv| kv.strip_prefix("token="))
                    .filter(|t| !t.is_empty())
            })
    })
}

/// Checks the origin, then the credential `policy` needs for `room` (the route's `{room}`);
/// a join or watch grant is handed to the handler as a request extension.
pub fn authorize(
    state: &AppState,
    policy: Policy,
    room: Option<&str>,
    req: &mut axum::extract::Request,
) -> Result<(), Response> {
    let path = req.uri().path();
    if policy.origin_checked {
        let h = req.headers();
        let origin = header_str(h, header::ORIGIN);
        // In a cluster, a page from any live node may reach the node its room lives on.
        let peer_node =
            || origin.is_some_and(|o| state.cluster.as_ref().is_some_and(|c| c.is_node_origin(o)));
        if let Err(e) = state
            .access
            .check_origin(origin, header_str(h, header::HOST))
            .or_else(|e| if peer_node() { Ok(()) } else { Err(e) })
        {
            tracing::debug!(%path, "refused: {e}");
            return Err(refuse(&e));
        }
    }
    let now = crate::auth::unix_now();
    let token = credential(req, policy.query_token);
    let room = room.unwrap_or_default();
    let a = &state.access;
    let verdict = match policy.need {
        Need::Public => Ok(None),
        Need::Admin => a.authorize_admin(token, now).map(|_| None),
        Need::Room(right) => a.authorize_room(token, room, right, now).map(|_| None),
        Need::Join => a.authorize_join(token, room, now).map(Some),
        Need::Watch => a.authorize_watch(token, room, now).map(Some),
    };
    match verdict {
        Ok(grant) => {
            if let Some(g) = grant {
                req.extensions_mut().insert::<JoinGrant>(g);
            }
            Ok(())
        }
        Err(e) => {
            tracing::debug!(method = %req.method(), %path, "refused: {e}");
            Err(refuse(&e))
        }
    }
}
