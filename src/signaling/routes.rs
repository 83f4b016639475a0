//! The route table: every HTTP route once, with its handler and everything the server
//! decides about it before the handler runs — the credential it needs, the rate class it
//! is counted against, whether it is cross-origin by design (CORS `*`, no `Origin`
//! check), whether a token may come in the query (pages a browser navigates to, players),
//! and whether in a cluster it is answered by the node that hosts its room. [`router`]
//! builds the axum router from it and one middleware, [`gate`], applies each row's
//! [`Policy`]; nothing else classifies paths.

use super::{access, calls, dashboard, live, moderation, recordings, whep, whip, AppState};
use crate::auth::RoomRight;
use axum::extract::{FromRequestParts, MatchedPath, RawPathParams, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;
use std::collections::HashMap;
use std::sync::Arc;

/// What a route asks of the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Static assets, health, the WebSocket upgrade (which checks its token at `join`).
    Public,
    /// The admin key or an admin token.
    Admin,
    /// An admin credential or a token for the route's `{room}` with this right.
    Room(RoomRight),
    /// A join token for `{room}` (WHIP); the grant goes to the handler.
    Join,
    /// A token for `{room}` that may receive (WHEP, HLS); the grant goes to the handler.
    Watch,
}

/// Which token bucket a request is counted against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateClass {
    /// Requests that create a session (WebSocket upgrade, WHIP/WHEP offers).
    Join,
    /// Everything else that is not free.
    Api,
}

/// Everything decided about a request before its handler runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub need: Need,
    /// `None`: not rate-limited (static assets, health, players' segment fetches).
    pub rate: Option<RateClass>,
    /// Reached from pages on other origins by design: CORS `*`, no `Origin` check (a
    /// bearer token or query token authenticates instead).
    pub cross_origin: bool,
    /// A browser page must come from an allowed origin (state changes, WebSocket).
    pub origin_checked: bool,
    /// The credential may be given as `?token=` (a page or player cannot set headers).
    pub query_token: bool,
    /// In a cluster, a request for a room another node hosts is redirected there (`307`).
    pub on_room_node: bool,
}

impl Policy {
    const fn new(need: Need, rate: Option<RateClass>) -> Self {
        Self {
            need,
            rate,
            cross_origin: false,
            origin_checked: false,
            query_token: false,
            on_room_node: false,
        }
    }

    /// What a path not in the table gets (it answers 404/405).
    pub const UNKNOWN: Policy = Policy::new(Need::Public, Some(RateClass::Api));
}

/// One row: a method on a path pattern (axum syntax, `{room}` names the room).
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub policy: Policy,
    handler: MethodRouter<Arc<AppState>>,
}

fn filter(m: &Method) -> MethodFilter {
    match *m {
        Method::GET => MethodFilter::GET,
        Method::POST => MethodFilter::POST,
        Method::DELETE => MethodFilter::DELETE,
        Method::PATCH => MethodFilter::PATCH,
        Method::PUT => MethodFilter::PUT,
        Method::OPTIONS => MethodFilter::OPTIONS,
        _ => MethodFilter::HEAD,
    }
}

/// Builds rows; defaults per kind of route, then adjusted by the table.
struct Row(Route);

impl Row {
    fn new<H, T>(method: Method, path: &'static str, need: Need, handler: H) -> Self
    where
        H: axum::handler::Handler<T, Arc<AppState>>,
        T: 'static,
    {
        let mutating = !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
        let mut policy = Policy::new(need, Some(RateClass::Api));
        policy.origin_checked = mutating;
        policy.on_room_node = path.starts_with("/api/rooms/{room}");
        Row(Route {
            handler: on(filter(&method), handler),
            method,
            path,
            policy,
        })
    }
    fn free(mut self) -> Self {
        self.0.policy.rate = None;
        self
    }
    fn joins(mut self) -> Self {
        self.0.policy.rate = Some(RateClass::Join);
        self
    }
    fn cross_origin(mut self) -> Self {
        self.0.policy.cross_origin = true;
        self.0.policy.origin_checked = false;
        self
    }
    fn query_token(mut self) -> Self {
        self.0.policy.query_token = true;
        self
    }
    fn on_room_node(mut self) -> Self {
        self.0.policy.on_room_node = true;
        self
    }
    fn origin_checked(mut self) -> Self {
        self.0.policy.origin_checked = true;
        self
    }
}

const INDEX_HTML: &str = include_str!("../../web/index.html");
const APP_JS: &str = include_str!("../../web/app.js");
const STYLE_CSS: &str = include_str!("../../web/style.css");

/// The whole table.
pub fn table() -> Vec<Route> {
    use Method as M;
    use Need::*;
    let moderate = Room(RoomRight::Moderate);
    let record = Room(RoomRight::Record);
    let page = |body: &'static str, ct: &'static str| move || async move { super::asset(body, ct) };
    let rows = vec![
        Row::new(
            M::GET,
            "/",
            Public,
            page(INDEX_HTML, "text/html; charset=utf-8"),
        )
        .free(),
        Row::new(
            M::GET,
            "/app.js",
            Public,
            page(APP_JS, "text/javascript; charset=utf-8"),
        )
        .free(),
        Row::new(
            M::GET,
            "/style.css",
            Public,
            page(STYLE_CSS, "text/css; charset=utf-8"),
        )
        .free(),
        Row::new(M::GET, "/healthz", Public, super::healthz).free(),
        Row::new(M::GET, "/metrics", Admin, super::metrics),
        Row::new(M::GET, "/api/events", Admin, super::events),
        Row::new(M::GET, "/api/stats", Admin, dashboard::stats),
        Row::new(M::GET, "/dashboard", Admin, dashboard::page).query_token(),
        Row::new(M::GET, "/dashboard.js", Public, dashboard::script).free(),
        Row::new(M::GET, "/vendor/uplot.js", Public, dashboard::uplot_js).free(),
        Row::new(M::GET, "/vendor/uplot.css", Public, dashboard::uplot_css).free(),
        Row::new(M::GET, "/ws", Public, super::ws_upgrade)
            .joins()
            .origin_checked(),
        Row::new(M::GET, "/api/rooms", Admin, super::list_rooms),
        Row::new(
            M::PATCH,
            "/api/rooms/{room}",
            moderate,
            moderation::patch_room,
        ),
        Row::new(
            M::DELETE,
            "/api/rooms/{room}/participants/{id}",
            moderate,
            moderation::kick,
        ),
        Row::new(
            M::POST,
            "/api/rooms/{room}/participants/{id}/mute",
            moderate,
            moderation::mute,
        ),
        Row::new(
            M::POST,
            "/api/rooms/{room}/mute-all",
            moderate,
            moderation::mute_all,
        ),
        Row::new(
            M::DELETE,
            "/api/rooms/{room}/presentation",
            moderate,
            moderation::stop_presentation,
        ),
        Row::new(
            M::POST,
            "/api/rooms/{room}/recording",
            record,
            recordings::start,
        ),
        Row::new(
            M::DELETE,
            "/api/rooms/{room}/recording",
            record,
            recordings::stop,
        ),
        Row::new(M::POST, "/api/rooms/{room}/calls", moderate, calls::place),
        Row::new(M::GET, "/api/rooms/{room}/calls", moderate, calls::list),
        Row::new(M::GET, "/api/rooms/{room}/calls/{id}", moderate, calls::get),
        Row::new(
            M::DELETE,
            "/api/rooms/{room}/calls/{id}",
            moderate,
            calls::hang_up,
        ),
        Row::new(
            M::POST,
            "/api/rooms/{room}/streams",
            record,
            live::add_stream,
        ),
        Row::new(
            M::GET,
            "/api/rooms/{room}/streams",
            record,
            live::list_streams,
        ),
        Row::new(
            M::DELETE,
            "/api/rooms/{room}/streams/{id}",
            record,
            live::delete_stream,
        ),
        Row::new(M::POST, "/api/admin/drain", Admin, super::drain),
        Row::new(M::GET, "/api/admin/drain", Admin, super::drain_status),
        Row::new(M::GET, "/api/cluster", Admin, super::cluster_status),
        Row::new(M::GET, "/api/recordings", Admin, recordings::list),
        Row::new(M::GET, "/api/recordings/{id}", Admin, recordings::download),
        // WHIP (RFC 9725): the POST places the room itself (a 307 is part of the protocol).
        Row::new(M::POST, "/whip/{room}", Join, whip::post)
            .joins()
            .cross_origin(),
        Row::new(M::OPTIONS, "/whip/{room}", Public, whip::options).cross_origin(),
        Row::new(M::DELETE, "/whip/{room}/{session}", Join, whip::delete).cross_origin(),
        Row::new(M::PATCH, "/whip/{room}/{session}", Join, whip::patch).cross_origin(),
        Row::new(M::OPTIONS, "/whip/{room}/{session}", Public, whip::options).cross_origin(),
        // WHEP: watchers; the same session handling as WHIP.
        Row::new(M::POST, "/whep/{room}", Watch, whep::post)
            .joins()
            .cross_origin(),
        Row::new(M::OPTIONS, "/whep/{room}", Public, whip::options).cross_origin(),
        Row::new(M::DELETE, "/whep/{room}/{session}", Watch, whip::delete).cross_origin(),
        Row::new(M::PATCH, "/whep/{room}/{session}", Watch, whip::patch).cross_origin(),
        Row::new(M::OPTIONS, "/whep/{room}/{session}", Public, whip::options).cross_origin(),
        // HLS for players on any page: a token in the query; answered by the room's node.
        Row::new(M::GET, "/hls/{room}/{file}", Watch, live::hls)
            .cross_origin()
            .query_token()
            .on_room_node(),
    ];
    rows.into_iter().map(|r| r.0).collect()
}

/// Policies by (method, path pattern), built once with the router.
type Policies = HashMap<(Method, &'static str), Policy>;

/// The router of [`table`], every request passing [`gate`].
pub fn router(state: Arc<AppState>) -> Router {
    let mut by_path: Vec<(&'static str, MethodRouter<Arc<AppState>>)> = Vec::new();
    let mut policies = Policies::new();
    for r in table() {
        let prev = policies.insert((r.method.clone(), r.path), r.policy);
        assert!(prev.is_none(), "route {} {} twice", r.method, r.path);
        match by_path.iter_mut().find(|(p, _)| *p == r.path) {
            Some((_, m)) => *m = std::mem::take(m).merge(r.handler),
            None => by_path.push((r.path, r.handler)),
        }
    }
    let mut router = Router::new();
    for (path, m) in by_path {
        router = router.route(path, m);
    }
    let policies = Arc::new(policies);
    router
        .fallback(|method: Method| async move {
            if method == Method::GET {
                (StatusCode::NOT_FOUND, "not found")
            } else {
                (StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
            }
        })
        .layer(axum::middleware::from_fn_with_state(
            (state.clone(), policies),
            gate,
        ))
        .with_state(state)
}

/// The policy of the matched route (OPTIONS and HEAD on a known path: that path's
/// loosest row, as axum answers them from the path's router).
fn policy_of(policies: &Policies, method: &Method, matched: Option<&str>) -> Policy {
    let Some(path) = matched else {
        return Policy::UNKNOWN;
    };
    policies
        .get(&(method.clone(), path))
        .copied()
        .or_else(|| {
            // HEAD is answered by the GET handler.
            (*method == Method::HEAD)
                .then(|| policies.get(&(Method::GET, path)).copied())
                .flatten()
        })
        .unwrap_or(Policy::UNKNOWN)
}

/// Every request, in order: CORS headers on the answer of a cross-origin route (429 and
/// 408 included, so a page on another origin can read why it was refused), the rate of
/// its class (`429` with `Retry-After`; counted before credentials, so a guessing client
/// is slowed down too), the `Origin` check and the credential the route needs (a join or
/// watch grant goes to the handler), the room's node in a cluster (`307`), and a bound on
/// the time the handler may take (`408`).
async fn gate(
    State((state, policies)): State<(Arc<AppState>, Arc<Policies>)>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let matched = req.extensions().get::<MatchedPath>().map(|m| m.as_str());
    let policy = policy_of(&policies, req.method(), matched);
    let mut resp = admit(&state, policy, req, next).await;
    if policy.cross_origin {
        let h = resp.headers_mut();
        let set = |h: &mut axum::http::HeaderMap, k, v| {
            h.insert(k, HeaderValue::from_static(v));
        };
        set(h, header::ACCESS_CONTROL_ALLOW_ORIGIN, "*");
        set(
            h,
            header::ACCESS_CONTROL_ALLOW_METHODS,
            "GET, POST, DELETE, PATCH, OPTIONS",
        );
        set(
            h,
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            "Content-Type, Authorization, If-Match",
        );
        set(
            h,
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            "Location, Link, ETag",
        );
    }
    resp
}

async fn admit(
    state: &Arc<AppState>,
    policy: Policy,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(class) = policy.rate {
        if let Err(r) = super::check_rate(state, &req, class) {
            return r;
        }
    }
    let (mut parts, body) = req.into_parts();
    let room = RawPathParams::from_request_parts(&mut parts, state)
        .await
        .ok()
        .and_then(|p| {
            p.iter()
                .find(|(k, _)| *k == "room")
                .map(|(_, v)| v.to_owned())
        });
    let mut req = axum::extract::Request::from_parts(parts, body);
    if let Err(r) = access::authorize(state, policy, room.as_deref(), &mut req) {
        return r;
    }
    if policy.on_room_node && state.cluster.is_some() {
        if let Some(id) = room.and_then(|r| crate::ids::RoomId::parse(&r).ok()) {
            if let Some(r) = super::redirect_to_owner(state, &id, req.uri()).await {
                return r;
            }
        }
    }
    let limit = std::time::Duration::from_secs(state.config.http.request_timeout_s.into());
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => (StatusCode::REQUEST_TIMEOUT, "request took too long").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(method: Method, path: &str) -> Policy {
        table()
            .into_iter()
            .find(|r| r.method == method && r.path == path)
            .unwrap_or_else(|| panic!("no row {method} {path}"))
            .policy
    }

    #[test]
    fn every_row_is_unique_and_room_routes_name_their_room() {
        let t = table();
        for (i, r) in t.iter().enumerate() {
            assert!(
                !t[..i]
                    .iter()
                    .any(|o| o.method == r.method && o.path == r.path),
                "{} {} twice",
                r.method,
                r.path
            );
            // A route that needs a room credential or runs on the room's node has a room.
            if matches!(r.policy.need, Need::Room(_) | Need::Join | Need::Watch)
                || r.policy.on_room_node
            {
                assert!(r.path.contains("{room}"), "{} {}", r.method, r.path);
            }
            // What changes state is origin-checked unless it is cross-origin by design.
            if !matches!(r.method, Method::GET | Method::HEAD | Method::OPTIONS) {
                assert!(
                    r.policy.origin_checked != r.policy.cross_origin,
                    "{} {}",
                    r.method,
                    r.path
                );
            }
        }
    }

    #[test]
    fn credentials_rates_and_origins_per_route() {
        let p = row(Method::GET, "/");
        assert_eq!((p.need, p.rate), (Need::Public, None));
        let p = row(Method::GET, "/ws");
        assert_eq!((p.need, p.rate), (Need::Public, Some(RateClass::Join)));
        assert!(p.origin_checked);
        for path in ["/api/rooms", "/api/recordings", "/api/events", "/metrics"] {
            assert_eq!(row(Method::GET, path).need, Need::Admin, "{path}");
        }
        assert!(row(Method::GET, "/dashboard").query_token);
        assert!(!row(Method::GET, "/api/rooms").query_token);
        let p = row(Method::PATCH, "/api/rooms/{room}");
        assert_eq!(p.need, Need::Room(RoomRight::Moderate));
        assert!(p.on_room_node && p.origin_checked);
        assert_eq!(
            row(Method::POST, "/api/rooms/{room}/recording").need,
            Need::Room(RoomRight::Record)
        );
        let p = row(Method::POST, "/whip/{room}");
        assert_eq!((p.need, p.rate), (Need::Join, Some(RateClass::Join)));
        assert!(p.cross_origin && !p.origin_checked && !p.on_room_node);
        assert_eq!(
            row(Method::DELETE, "/whip/{room}/{session}").need,
            Need::Join
        );
        assert_eq!(row(Method::OPTIONS, "/whip/{room}").need, Need::Public);
        let p = row(Method::POST, "/whep/{room}");
        assert_eq!((p.need, p.rate), (Need::Watch, Some(RateClass::Join)));
        assert!(p.cross_origin);
        assert_eq!(
            row(Method::DELETE, "/whep/{room}/{session}").need,
            Need::Watch
        );
        let p = row(Method::GET, "/hls/{room}/{file}");
        assert_eq!(p.need, Need::Watch);
        assert!(p.query_token && p.cross_origin && p.on_room_node);
        assert_eq!(
            row(Method::POST, "/api/rooms/{room}/streams").need,
            Need::Room(RoomRight::Record)
        );
    }

    #[test]
    fn unknown_paths_are_public_and_rate_limited() {
        let policies: Policies = table()
            .into_iter()
            .map(|r| ((r.method, r.path), r.policy))
            .collect();
        assert_eq!(policy_of(&policies, &Method::GET, None), Policy::UNKNOWN);
        assert_eq!(
            policy_of(&policies, &Method::HEAD, Some("/healthz")).rate,
            None
        );
    }
}
