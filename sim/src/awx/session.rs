//! Django's session login, as the awx CLI uses it with a username and password: `/api/`
//! hands out the `csrftoken` cookie, `POST /api/login/` (a form, with the token in
//! `X-CSRFToken`) answers 302 with the `awx_sessionid` cookie, and every unsafe request of the
//! session must carry the token again (`django.middleware.csrf`, `awx/api/generics.py`
//! `LoggedLoginView`).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::*;

/// The session cookie's name (AWX's `SESSION_COOKIE_NAME`).
pub(super) const SESSION_COOKIE: &str = "awx_sessionid";
/// Django's CSRF cookie.
pub(super) const CSRF_COOKIE: &str = "csrftoken";

/// The request's cookies.
pub(super) fn cookies(headers: &HeaderMap) -> HashMap<String, String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// A fresh random token (64 characters, as Django's masked CSRF tokens are).
fn token() -> String {
    let a = uuid::Uuid::now_v7().simple().to_string();
    let b = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, a.as_bytes())
        .simple()
        .to_string();
    format!("{a}{b}")
}

fn set_cookie(r: &mut Response, value: String) {
    if let Ok(v) = HeaderValue::from_str(&value) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// Give the client a CSRF cookie unless it has one.
pub(super) fn with_csrf_cookie(headers: &HeaderMap, mut r: Response) -> Response {
    if !cookies(headers).contains_key(CSRF_COOKIE) {
        set_cookie(
            &mut r,
            format!("{CSRF_COOKIE}={}; Path=/; SameSite=Lax", token()),
        );
    }
    r
}

/// What the request's session cookie says.
pub(super) enum Session {
    /// No session (or one that ended): the other credentials decide.
    None,
    /// A logged-in session.
    LoggedIn,
    /// A logged-in session whose unsafe request lacks the CSRF token Django requires: 403.
    CsrfFailed(&'static str),
}

/// The session the request belongs to, if any.
pub(super) fn session(s: &Inner, method: &Method, headers: &HeaderMap) -> Session {
    let jar = cookies(headers);
    if !jar
        .get(SESSION_COOKIE)
        .is_some_and(|id| s.sessions.contains(id))
    {
        return Session::None;
    }
    if matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    ) {
        return Session::LoggedIn;
    }
    let sent = headers.get("x-csrftoken").and_then(|v| v.to_str().ok());
    match (jar.get(CSRF_COOKIE), sent) {
        (None, _) => Session::CsrfFailed("CSRF Failed: CSRF cookie not set."),
        (Some(_), None) => Session::CsrfFailed("CSRF Failed: CSRF token missing."),
        (Some(c), Some(h)) if c != h => Session::CsrfFailed(
            "CSRF Failed: CSRF token from the 'X-Csrftoken' HTTP header incorrect.",
        ),
        _ => Session::LoggedIn,
    }
}

fn login_page(status: StatusCode, error: bool) -> Response {
    let note = if error {
        "<p class=\"errornote\">Please enter a correct username and password. Note that both fields may be case-sensitive.</p>"
    } else {
        ""
    };
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        format!(
            "<!DOCTYPE html><html><head><title>AWX REST API</title></head><body>{note}\
             <form action=\"/api/login/\" method=\"post\">\
             <input type=\"text\" name=\"username\"><input type=\"password\" name=\"password\">\
             <input type=\"hidden\" name=\"next\" value=\"/api/\"><input type=\"submit\" value=\"Log in\"></form>\
             </body></html>"
        ),
    )
        .into_response()
}

/// `GET /api/login/`: the form (HTML only: another Accept is 406) and the CSRF cookie.
pub(super) async fn login_form(headers: HeaderMap) -> Response {
    let accepts_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|a| a.contains("text/html") || a.contains("*/*"));
    if !accepts_html {
        return StatusCode::NOT_ACCEPTABLE.into_response();
    }
    with_csrf_cookie(&headers, login_page(StatusCode::OK, false))
}

/// `POST /api/login/`: a form with `username`, `password` and `next`.
pub(super) async fn login(State(sim): State<AwxSim>, headers: HeaderMap, body: Bytes) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let jar = cookies(&headers);
    let sent = headers
        .get("x-csrftoken")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| form.get("csrfmiddlewaretoken").cloned());
    if !jar.contains_key(CSRF_COOKIE) || jar.get(CSRF_COOKIE) != sent.as_ref() {
        // Django's CSRF failure page, not the API's JSON.
        return (
            StatusCode::FORBIDDEN,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            "<h1>Forbidden <span>(403)</span></h1><p>CSRF verification failed. Request aborted.</p>",
        )
            .into_response();
    }
    let mut s = sim.lock();
    let valid =
        form.get("username") == Some(&s.username) && form.get("password") == Some(&s.password);
    if !valid {
        return login_page(StatusCode::UNAUTHORIZED, true);
    }
    let id = token()[..32].to_owned();
    s.sessions.insert(id.clone());
    let next = form
        .get("next")
        .filter(|n| n.starts_with('/'))
        .cloned()
        .unwrap_or_else(|| "/api/".into());
    drop(s);
    let mut r = StatusCode::FOUND.into_response();
    if let Ok(v) = HeaderValue::from_str(&next) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r.headers_mut().insert(
        "x-api-session-cookie-name",
        HeaderValue::from_static(SESSION_COOKIE),
    );
    set_cookie(&mut r, "userLoggedIn=true; Path=/".into());
    // Django rotates the CSRF token at login.
    set_cookie(
        &mut r,
        format!("{CSRF_COOKIE}={}; Path=/; SameSite=Lax", token()),
    );
    set_cookie(
        &mut r,
        format!("{SESSION_COOKIE}={id}; HttpOnly; Max-Age=1800; Path=/; SameSite=Lax"),
    );
    r
}

/// `/api/logout/`: the session ends; back to the API root.
pub(super) async fn logout(State(sim): State<AwxSim>, headers: HeaderMap) -> Response {
    if let Some(id) = cookies(&headers).get(SESSION_COOKIE) {
        sim.lock().sessions.remove(id);
    }
    let mut r = StatusCode::FOUND.into_response();
    r.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static("/api/"));
    set_cookie(&mut r, "userLoggedIn=false; Path=/".into());
    set_cookie(
        &mut r,
        format!("{SESSION_COOKIE}=\"\"; Max-Age=0; Path=/; SameSite=Lax"),
    );
    r
}
