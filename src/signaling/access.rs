//! The HTTP side of access control: which credential each route needs ([`need`], one
//! table for the whole router), and the middleware that checks it and the request's
//! `Origin` before any handler runs. The rules themselves live in [`crate::auth`].

use super::AppState;
use crate::auth::{AuthError, JoinGrant, RoomRight};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// What a route asks of the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Need {
    /// Static assets, health, the WebSocket upgrade (which checks its token at `join`).
    Public,
    /// The admin key or an admin token.
    Admin,
    /// An admin credential or a token for this room with this right.
    Room(String, RoomRight),
    /// A join token for this room (WHIP); the grant goes to the handler.
    Join(String),
}

/// The credential `method path` needs. Unknown paths are public (they answer 404/405).
pub fn need(method: &Method, path: &str) -> Need {
    let seg: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let room = |i: usize| seg.get(i).copied().unwrap_or_default().to_owned();
    match (method, seg.as_slice()) {
        (_, ["whip", r, ..]) if *method != Method::OPTIONS => Need::Join((*r).to_owned()),
        (_, ["api", "rooms", _, "recording"]) => Need::Room(room(2), RoomRight::Record),
        (_, ["api", "rooms", _, ..]) => Need::Room(room(2), RoomRight::Moderate),
        (_, ["api", ..]) | (_, ["metrics"]) | (_, ["dashboard"]) => Need::Admin,
        _ => Need::Public,
    }
}

/// Requests that change state, and WebSocket upgrades, from a browser page must come from
/// an allowed origin. WHIP is exempt: it is cross-origin by design (CORS `*`) and carries a
/// bearer token when access control is on.
fn origin_checked(method: &Method, path: &str) -> bool {
    if path.starts_with("/whip/") {
        return false;
    }
    path == "/ws" || !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

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

/// The bearer token: the `Authorization` header, or for the dashboard page (a browser
/// navigation cannot set headers) a `token` query parameter.
fn credential<'a>(req: &'a axum::extract::Request) -> Option<&'a str> {
    crate::auth::bearer(header_str(req.headers(), header::AUTHORIZATION)).or_else(|| {
        (req.uri().path() == "/dashboard")
            .then(|| req.uri().query())
            .flatten()
            .and_then(|q| {
                q.split('&')
                    .find_map(|kv| kv.strip_prefix("token="))
                    .filter(|t| !t.is_empty())
            })
    })
}

/// Checks the origin, then the credential the route needs; a join grant is handed to the
/// handler as a request extension.
pub async fn authorize(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    if origin_checked(&method, &path) {
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
            return refuse(&e);
        }
    }
    let now = crate::auth::unix_now();
    let token = credential(&req);
    let verdict = match need(&method, &path) {
        Need::Public => Ok(None),
        Need::Admin => state.access.authorize_admin(token, now).map(|_| None),
        Need::Room(room, right) => state
            .access
            .authorize_room(token, &room, right, now)
            .map(|_| None),
        Need::Join(room) => state.access.authorize_join(token, &room, now).map(Some),
    };
    match verdict {
        Ok(grant) => {
            if let Some(g) = grant {
                req.extensions_mut().insert::<JoinGrant>(g);
            }
            next.run(req).await
        }
        Err(e) => {
            tracing::debug!(%method, %path, "refused: {e}");
            refuse(&e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_its_need() {
        let get = Method::GET;
        for p in ["/", "/app.js", "/style.css", "/healthz", "/ws", "/nope"] {
            assert_eq!(need(&get, p), Need::Public, "{p}");
        }
        for p in [
            "/api/rooms",
            "/api/recordings",
            "/api/recordings/x",
            "/api/events",
            "/metrics",
            "/dashboard",
        ] {
            assert_eq!(need(&get, p), Need::Admin, "{p}");
        }
        assert_eq!(
            need(&Method::PATCH, "/api/rooms/r"),
            Need::Room("r".into(), RoomRight::Moderate)
        );
        assert_eq!(
            need(&Method::POST, "/api/rooms/r/participants/3/mute"),
            Need::Room("r".into(), RoomRight::Moderate)
        );
        assert_eq!(
            need(&Method::POST, "/api/rooms/r/recording"),
            Need::Room("r".into(), RoomRight::Record)
        );
        assert_eq!(need(&Method::POST, "/whip/r"), Need::Join("r".into()));
        assert_eq!(need(&Method::DELETE, "/whip/r/s"), Need::Join("r".into()));
        assert_eq!(need(&Method::OPTIONS, "/whip/r"), Need::Public);
    }

    #[test]
    fn which_requests_must_come_from_an_allowed_origin() {
        assert!(origin_checked(&Method::GET, "/ws"));
        assert!(origin_checked(&Method::POST, "/api/rooms/r/recording"));
        assert!(origin_checked(
            &Method::DELETE,
            "/api/rooms/r/participants/1"
        ));
        assert!(!origin_checked(&Method::GET, "/api/rooms"));
        assert!(!origin_checked(&Method::POST, "/whip/r"));
    }
}
