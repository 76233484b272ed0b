//! Request ids: a random id per request, in the `x-request-id` response header and in every
//! error envelope, and on the request's log lines.

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being served on this task, if any.
pub fn current() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// A fresh id: 24 hex digits.
pub fn fresh() -> String {
    let mut bytes = [0u8; 12];
    // An id only needs to be unique; fall back to the clock if the RNG fails.
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        bytes.copy_from_slice(&nanos.to_be_bytes()[4..]);
    }
    hex::encode(bytes)
}

/// Runs `served` with `id` as the current request id.
pub async fn scope<F: std::future::Future>(id: String, served: F) -> F::Output {
    REQUEST_ID.scope(id, served).await
}
