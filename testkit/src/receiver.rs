//! An HTTP receiver for webhook calls (from meterd directly or from Alertmanager): keeps every
//! request's path, headers and JSON body; answers with a status the test sets.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU16, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, Uri},
    Router,
};

#[derive(Debug, Clone)]
pub struct Request {
    pub path: String,
    pub headers: HashMap<String, String>,
    pub raw: Vec<u8>,
    pub body: serde_json::Value,
}

#[derive(Clone, Default)]
pub struct Receiver {
    requests: Arc<Mutex<Vec<Request>>>,
    status: Arc<AtomicU16>,
    pub port: u16,
}

async fn handle(
    State(r): State<Receiver>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let status = r.status.load(Ordering::Relaxed);
    if status == 200 {
        r.requests.lock().unwrap().push(Request {
            path: uri.path().to_string(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                .collect(),
            raw: body.to_vec(),
            body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        });
    }
    StatusCode::from_u16(status).unwrap_or(StatusCode::OK)
}

impl Receiver {
    pub async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut r = Receiver {
            port: listener.local_addr().unwrap().port(),
            ..Default::default()
        };
        r.status.store(200, Ordering::Relaxed);
        r = r.clone();
        let app = Router::new().fallback(handle).with_state(r.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        r
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Answer every request with `status` from now on (not 200: the request is not kept).
    pub fn answer(&self, status: u16) {
        self.status.store(status, Ordering::Relaxed);
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// Wait until some request satisfies `pred`; panic with what came instead.
    pub async fn wait_for(
        &self,
        what: &str,
        within: Duration,
        pred: impl Fn(&Request) -> bool,
    ) -> Request {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(r) = self.requests().into_iter().find(|r| pred(r)) {
                return r;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; got:\n{:#?}",
                    self.requests()
                        .iter()
                        .map(|r| (&r.path, &r.body))
                        .collect::<Vec<_>>()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
