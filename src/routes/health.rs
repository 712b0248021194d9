//! `GET /healthz`: the process is up and answering.

pub async fn healthz() -> &'static str {
    "ok"
}
