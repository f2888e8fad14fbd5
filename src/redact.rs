//! Keeping secrets out of logs and API answers. A URL can carry secrets in its user info, path
//! (chat webhooks put their token there) or query (InfluxDB 1.x's `u`/`p`): wherever meterd
//! shows one, it shows scheme, host and port only. Errors from the HTTP client name the URL
//! they failed on; they are shown without it.

/// `scheme://host[:port]` of `url`, or a placeholder when it cannot be parsed.
pub fn url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => {
            let host = u.host_str().unwrap_or("");
            match u.port() {
                Some(p) => format!("{}://{host}:{p}", u.scheme()),
                None => format!("{}://{host}", u.scheme()),
            }
        }
        Err(_) => "<url>".to_string(),
    }
}

/// An HTTP client error and its causes, without the URL it was about.
pub fn http_error(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut out = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_shown_as_scheme_host_and_port_only() {
        for (given, shown) in [
            (
                "https://hooks.example.net/services/T000/B000/XXXXSECRET",
                "https://hooks.example.net",
            ),
            (
                "http://meterd:pa55@127.0.0.1:8086/write?db=m&u=meterd&p=pa55",
                "http://127.0.0.1:8086",
            ),
            ("http://[::1]:9093/api/v2/alerts", "http://[::1]:9093"),
            ("not a url pa55", "<url>"),
        ] {
            assert_eq!(url(given), shown, "{given}");
        }
    }

    #[tokio::test]
    async fn an_http_error_names_the_cause_but_not_the_url() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{port}/hook/SECRET-TOKEN?p=pa55"))
            .send()
            .await
            .unwrap_err();
        let shown = http_error(e);
        assert!(
            !shown.contains("SECRET") && !shown.contains("pa55"),
            "{shown}"
        );
        assert!(shown.to_lowercase().contains("connect"), "{shown}");
    }
}
