//! Sending events: a JSON Lines file, an SNS topic (the serverless CA's channel), a webhook.
//! Events arrive as JSON: those a channel did not take are kept in the state as sent.

use serde_json::Value;
use std::io::Write;

pub fn write_jsonl(path: &std::path::Path, events: &[Value]) -> Result<(), String> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    for e in events {
        let line = serde_json::to_string(e).map_err(|e| e.to_string())?;
        writeln!(f, "{line}").map_err(|e| format!("{}: {e}", path.display()))?;
    }
    f.sync_all().map_err(|e| format!("{}: {e}", path.display()))
}

/// One SNS message per event, with the event kind as a message attribute for filtering.
pub async fn publish_sns(
    topic: &str,
    region: Option<&str>,
    events: &[Value],
) -> Result<usize, String> {
    let conf = super::aws::sdk_config(region).await;
    let client = aws_sdk_sns::Client::new(&conf);
    let mut sent = 0;
    for e in events {
        let kind = text(e, "event");
        let attr = aws_sdk_sns::types::MessageAttributeValue::builder()
            .data_type("String")
            .string_value(kind)
            .build()
            .map_err(|e| e.to_string())?;
        client
            .publish()
            .topic_arn(topic)
            .subject(
                format!("gitca: {kind} {}", text(e, "request"))
                    .chars()
                    .take(100)
                    .collect::<String>(),
            )
            .message(serde_json::to_string(e).map_err(|e| e.to_string())?)
            .message_attributes("event", attr)
            .send()
            .await
            .map_err(|err| format!("SNS topic {topic}: {}", super::aws::describe(&err)))?;
        sent += 1;
    }
    Ok(sent)
}

/// A string field of an event, or "".
fn text<'a>(e: &'a Value, field: &str) -> &'a str {
    e.get(field).and_then(Value::as_str).unwrap_or_default()
}

/// A human line per event, for chat webhooks.
pub fn summary(events: &[Value]) -> String {
    events
        .iter()
        .map(|e| {
            let mut s = format!(
                "[{}] {} {}",
                text(e, "ca"),
                text(e, "event"),
                text(e, "request")
            );
            if let Some(d) = e.get("days_left").and_then(Value::as_u64) {
                // The threshold crossed: after a long gap between runs, less may be left.
                s.push_str(&format!(" (expires within {d} day(s))"));
            }
            for r in e
                .get("reasons")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                s.push_str(&format!(" [{}]", text(r, "code")));
            }
            s
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// How long one webhook POST may take in all. The apply waits for it holding the state lease,
/// which every other apply and CRL refresh waits for: an endpoint that never answers must not
/// hold them (ureq sets no timeout by default).
pub const WEBHOOK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// One POST with every event: `{"text": summary, "events": [...]}` (Slack shows `text`).
pub async fn post_webhook(url: &str, events: &[Value]) -> Result<(), String> {
    post_webhook_within(url, events, WEBHOOK_TIMEOUT).await
}

async fn post_webhook_within(
    url: &str,
    events: &[Value],
    timeout: std::time::Duration,
) -> Result<(), String> {
    let body = serde_json::json!({ "text": summary(events), "events": events }).to_string();
    let url = url.to_string();
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .build()
        .new_agent();
    // ureq is blocking: keep it off the async workers.
    tokio::task::spawn_blocking(move || {
        agent
            .post(&url)
            .header("Content-Type", "application/json")
            .send(body.as_bytes())
            .map(|_| ())
            .map_err(|e| format!("webhook {}: {e}", redact(&url)))
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Webhook URLs carry secrets in their path (Slack): log the host only.
fn redact(url: &str) -> String {
    url.split('/').take(3).collect::<Vec<_>>().join("/") + "/…"
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by review: an endpoint that accepted the connection and never answered held the
    /// apply, and its state lease, for good.
    #[tokio::test]
    async fn a_webhook_that_never_answers_is_an_error_after_the_timeout() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        // Accepts and holds the connection without a byte of answer.
        let _held = std::thread::spawn(move || {
            let conns: Vec<_> = listener.incoming().take(1).collect();
            std::thread::sleep(std::time::Duration::from_secs(60));
            drop(conns);
        });
        let send = post_webhook_within(&url, &[], std::time::Duration::from_millis(500));
        let e = tokio::time::timeout(std::time::Duration::from_secs(20), send)
            .await
            .expect("still waiting for the webhook after 20 s")
            .unwrap_err();
        assert!(e.contains("webhook http://127.0.0.1"), "{e}");
    }
}
