//! Sending events: a JSON Lines file, an SNS topic (the serverless CA's channel), a webhook.

use crate::domain::events::Event;
use std::io::Write;

pub fn write_jsonl(path: &std::path::Path, events: &[Event]) -> Result<(), String> {
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
    events: &[Event],
) -> Result<usize, String> {
    let conf = super::aws::sdk_config(region).await;
    let client = aws_sdk_sns::Client::new(&conf);
    let mut sent = 0;
    for e in events {
        let kind = serde_json::to_value(e.event).map_err(|e| e.to_string())?;
        let attr = aws_sdk_sns::types::MessageAttributeValue::builder()
            .data_type("String")
            .string_value(kind.as_str().unwrap_or_default())
            .build()
            .map_err(|e| e.to_string())?;
        client
            .publish()
            .topic_arn(topic)
            .subject(
                format!(
                    "gitca: {} {}",
                    kind.as_str().unwrap_or_default(),
                    e.request.as_deref().unwrap_or("")
                )
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

/// A human line per event, for chat webhooks.
pub fn summary(events: &[Event]) -> String {
    events
        .iter()
        .map(|e| {
            let kind = serde_json::to_value(e.event)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default();
            let mut s = format!("[{}] {kind} {}", e.ca, e.request.as_deref().unwrap_or(""));
            if let Some(d) = e.days_left {
                s.push_str(&format!(" (expires in {d} day(s))"));
            }
            for r in &e.reasons {
                s.push_str(&format!(" [{}]", r.code));
            }
            s
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// One POST with every event: `{"text": summary, "events": [...]}` (Slack shows `text`).
pub async fn post_webhook(url: &str, events: &[Event]) -> Result<(), String> {
    let body = serde_json::json!({ "text": summary(events), "events": events }).to_string();
    let url = url.to_string();
    // ureq is blocking: keep it off the async workers.
    tokio::task::spawn_blocking(move || {
        ureq::post(&url)
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
