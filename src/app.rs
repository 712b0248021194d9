//! The router: every route and the layers around them.

use axum::Router;
use axum::routing::{get, post};
use tower_http::trace::TraceLayer;

use crate::state::AppState;
use crate::{body_deadline, routes};

/// Every route, in one place.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(routes::index::general))
        .route("/rooms", get(routes::rooms::rooms))
        .route("/rooms/{room}", get(routes::index::room))
        .route("/rooms/{room}/presence", get(routes::presence::presence))
        .route(
            "/rooms/{room}/messages/{id}",
            axum::routing::delete(routes::takeback::delete).patch(routes::takeback::edit),
        )
        .route("/rooms/{room}/messages/{id}/delete", post(routes::takeback::delete_form))
        .route(
            "/rooms/{room}/messages/{id}/edit",
            get(routes::takeback::edit_page).post(routes::takeback::edit_form_post),
        )
        .route("/typing", post(routes::presence::typing))
        .route("/go", get(routes::index::go))
        .route("/login", get(routes::login::form).post(routes::login::sign_in))
        .route("/logout", post(routes::login::sign_out))
        .route("/send", post(routes::send::send))
        .route("/events", get(routes::events::events))
        .route("/history", get(routes::history::history))
        .route("/admin/bans", get(routes::admin::list).post(routes::admin::add).delete(routes::admin::remove))
        .route("/healthz", get(routes::health::healthz))
        .route("/readyz", get(routes::health::readyz))
        .route("/metrics", get(routes::health::metrics))
        .route("/assets/{file}", get(routes::assets::asset))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        // Requests are traced at debug level; stream bodies are not wrapped per chunk.
        // Refusals (429, 503) are answers, not server failures: logged at debug, not error.
        .layer(
            TraceLayer::new_for_http()
                .on_body_chunk(())
                .on_eos(())
                .on_failure(tower_http::trace::DefaultOnFailure::new().level(tracing::Level::DEBUG)),
        )
        .layer(tower::util::MapRequestLayer::new(body_deadline::limit(state.config.body_timeout)))
        .layer(tower::util::option_layer(routes::cors(&state.config.cors_origin)))
        // Who signed in: inside the host check, so a misdirected request costs no store call.
        .layer(axum::middleware::from_fn_with_state(state.clone(), routes::sign_in))
        // Every request, CORS preflights too, is for a host this server answers for.
        .layer(axum::middleware::from_fn_with_state(state.clone(), routes::host_allowed))
        .layer(axum::middleware::map_response(routes::security_headers))
        .with_state(state)
}
