//! Events of an apply: a JSON Lines file, a webhook (a local HTTP server here) and an SNS topic
//! (moto, delivering to the same kind of local HTTP endpoint).

mod common;
use common::moto::{self, aws_vars};
use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex};

/// A tiny HTTP server on 127.0.0.1 that records request bodies and answers 200.
fn http_sink() -> (String, Arc<Mutex<Vec<String>>>) {
    http_sink_on(std::net::TcpListener::bind("127.0.0.1:0").unwrap())
}

fn http_sink_on(listener: std::net::TcpListener) -> (String, Arc<Mutex<Vec<String>>>) {
    let url = format!("http://{}/hook/SECRET", listener.local_addr().unwrap());
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let b = bodies.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(200) {
            let Ok(mut s) = stream else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; len];
            let _ = r.read_exact(&mut body);
            b.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&body).into_owned());
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (url, bodies)
}

fn events_of(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn apply_writes_events_and_posts_them_to_a_webhook() {
    let (url, bodies) = http_sink();
    let env = Env::from(EXAMPLE, &["revocations.yaml"]);
    env.edit("gitca.yaml", |cfg| {
        format!("{cfg}\nevents:\n  webhook_url: {url}\n")
    });
    env.commit_all("events");
    env.init(&[]);
    let file = env.tmp().join("events.jsonl");
    env.ok(&["apply", "--events", file.to_str().unwrap()], 3);
    let ev = events_of(&file);
    assert_eq!(
        ev.iter().filter(|e| e["event"] == "issued").count(),
        7,
        "{ev:#?}"
    );
    let rejected: Vec<_> = ev.iter().filter(|e| e["event"] == "rejected").collect();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0]["reasons"][0]["code"], "dns-not-allowed");
    assert!(
        ev.iter()
            .all(|e| e["ca"] == "example-ca" && e["time"].is_string())
    );
    let posted = bodies.lock().unwrap().clone();
    assert_eq!(posted.len(), 1, "one POST per run");
    let body: serde_json::Value = serde_json::from_str(&posted[0]).unwrap();
    assert_eq!(body["events"].as_array().unwrap().len(), ev.len());
    assert!(
        body["text"]
            .as_str()
            .unwrap()
            .contains("[example-ca] issued requests/servers/web-01.yaml")
    );

    // A second run on the same commit: no repeated rejection, nothing new.
    env.ok(&["apply", "--events", file.to_str().unwrap()], 3);
    assert_eq!(
        events_of(&file).len(),
        ev.len(),
        "{:#?}",
        &events_of(&file)[ev.len()..]
    );

    // Defect `rejections-repeat-after-a-quiet-commit`: a new commit that changed nothing was
    // never marked reconciled, so every later run reported its rejections again. Once per
    // reviewed commit.
    std::fs::write(env.path("NOTES.md"), "notes\n").unwrap();
    env.commit_all("notes");
    for _ in 0..3 {
        env.ok(&["apply", "--events", file.to_str().unwrap()], 3);
    }
    let rejected =
        |ev: &[serde_json::Value]| ev.iter().filter(|e| e["event"] == "rejected").count();
    assert_eq!(rejected(&events_of(&file)), 2, "{:#?}", events_of(&file));
    // Defect `crl-marks-the-commit-reconciled`: `gitca crl` on a commit with a new rejected
    // request marked it reconciled, and apply never reported the rejection.
    std::fs::copy(
        env.path("requests/servers/rejected-outside-domain.yaml"),
        env.path("requests/servers/rejected-too.yaml"),
    )
    .unwrap();
    env.commit_all("another rejected request");
    env.ok(&["crl", "--force"], 0);
    env.ok(&["apply", "--events", file.to_str().unwrap()], 3);
    let ev = events_of(&file);
    assert!(
        ev.iter()
            .any(|e| e["event"] == "rejected"
                && e["request"] == "requests/servers/rejected-too.yaml"),
        "{ev:#?}"
    );

    // Revocation and the expiry thresholds crossed since the last run (web-01 lives 60 days).
    std::fs::copy(
        std::path::Path::new(EXAMPLE).join("revocations.yaml"),
        env.path("revocations.yaml"),
    )
    .unwrap();
    env.commit_all("revoke");
    let idx = env.index("example-ca");
    let web = idx["certs"]
        .as_object()
        .unwrap()
        .values()
        .find(|c| c["request_id"] == "requests/servers/web-01.yaml")
        .unwrap();
    let not_after = time::OffsetDateTime::parse(
        web["not_after"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let at = (not_after - time::Duration::days(20))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    env.ok(
        &["apply", "--events", file.to_str().unwrap(), "--now", &at],
        3,
    );
    let ev = events_of(&file);
    assert!(
        ev.iter()
            .any(|e| e["event"] == "revoked" && e["request"] == "requests/clients/old-laptop.yaml"),
        "{ev:#?}"
    );
    let web_expiring: Vec<_> = ev
        .iter()
        .filter(|e| e["event"] == "expiring" && e["request"] == "requests/servers/web-01.yaml")
        .collect();
    assert_eq!(web_expiring.len(), 1, "the 30-day threshold, once: {ev:#?}");
    assert_eq!(web_expiring[0]["days_left"], 30);
}

/// Found by review: the time of the last events was saved before sending, so the events of a
/// run whose webhook was down were never sent. They are kept in the state and sent, first, by
/// the next apply that reaches the webhook.
#[test]
fn events_a_webhook_did_not_take_are_sent_by_the_next_apply() {
    // A port nothing listens on, until the sink below takes it.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let url = format!("http://{addr}/hook/SECRET");
    // No rejected request, so that a run with nothing to do is recorded quiet.
    let env = Env::from(EXAMPLE, &EXAMPLE_ALL_ISSUED);
    env.edit("gitca.yaml", |cfg| {
        format!("{cfg}\nevents:\n  webhook_url: {url}\n")
    });
    env.commit_all("events to a webhook that is down");
    env.init(&[]);
    env.ok(&["apply"], 0);
    let kept = env.index("example-ca")["undelivered_events"]["webhook"].clone();
    let issued = |events: &serde_json::Value| {
        (events.as_array().into_iter().flatten())
            .filter(|e| e["event"] == "issued")
            .count()
    };
    assert_eq!(issued(&kept), 7, "{kept}");

    // Still down, on the same commit: kept, not doubled, and the run is not recorded quiet
    // (a quiet run sends nothing, so the backlog would wait for the next change).
    for _ in 0..2 {
        env.ok(&["apply"], 0);
        let still = env.index("example-ca")["undelivered_events"]["webhook"].clone();
        assert_eq!(still, kept);
    }

    // Back, at the same address: the next apply, on the same commit, sends the backlog.
    let (_, bodies) = http_sink_on(std::net::TcpListener::bind(addr).unwrap());
    env.ok(&["apply"], 0);
    let posted = bodies.lock().unwrap().clone();
    assert_eq!(posted.len(), 1, "one POST: {posted:?}");
    let body: serde_json::Value = serde_json::from_str(&posted[0]).unwrap();
    assert_eq!(issued(&body["events"]), 7, "{body}");
    assert_eq!(body["events"][0], kept[0], "the backlog first");
    assert!(body["text"].as_str().unwrap().contains("issued requests/"));
    let idx = env.index("example-ca");
    assert!(idx.get("undelivered_events").is_none(), "{idx}");
    env.ok(&["apply"], 0);
    assert_eq!(bodies.lock().unwrap().len(), 1, "sent once");
}

/// A backlog for a channel no longer given (`--events` left out) is dropped: kept, it would keep
/// every later run from being recorded quiet.
#[test]
fn a_backlog_for_a_channel_no_longer_given_is_dropped() {
    let env = Env::from(EXAMPLE, &["revocations.yaml"]);
    env.init(&[]);
    let unwritable = env.tmp().join("no-such-folder/events.jsonl");
    env.ok(&["apply", "--events", unwritable.to_str().unwrap()], 3);
    let kept = env.index("example-ca")["undelivered_events"]["file"].clone();
    assert_eq!(kept.as_array().map(Vec::len), Some(8), "{kept}");
    env.ok(&["apply"], 3);
    let idx = env.index("example-ca");
    assert!(idx.get("undelivered_events").is_none(), "{idx}");
}

#[tokio::test(flavor = "multi_thread")]
async fn events_are_published_to_sns() {
    let Some(endpoint) = moto::endpoint() else {
        return;
    };
    let (url, bodies) = http_sink();
    let sns = {
        let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&endpoint)
            .region(aws_config::Region::new(moto::REGION))
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "testing", "testing", None, None, "test",
            ))
            .load()
            .await;
        aws_sdk_sns::Client::new(&conf)
    };
    let topic = sns
        .create_topic()
        .name(moto::unique("gitca-events"))
        .send()
        .await
        .unwrap()
        .topic_arn()
        .unwrap()
        .to_string();
    sns.subscribe()
        .topic_arn(&topic)
        .protocol("http")
        .endpoint(&url)
        .send()
        .await
        .unwrap();
    let mut env = Env::from(EXAMPLE, &["revocations.yaml"]);
    env.vars = aws_vars(&endpoint);
    env.edit("gitca.yaml", |cfg| {
        format!("{cfg}\nevents:\n  sns_topic_arn: {topic}\n")
    });
    env.commit_all("events to SNS");
    env.init(&[]);
    env.ok(&["apply"], 3);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let notifications: Vec<serde_json::Value> = bodies
            .lock()
            .unwrap()
            .iter()
            .filter_map(|b| serde_json::from_str::<serde_json::Value>(b).ok())
            .filter(|v| v["Type"] == "Notification")
            .collect();
        if notifications.len() >= 8 {
            let messages: Vec<serde_json::Value> = notifications
                .iter()
                .map(|n| serde_json::from_str(n["Message"].as_str().unwrap()).unwrap())
                .collect();
            assert_eq!(
                messages.iter().filter(|m| m["event"] == "issued").count(),
                7
            );
            assert_eq!(
                messages.iter().filter(|m| m["event"] == "rejected").count(),
                1
            );
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "SNS delivered {} notification(s)",
            notifications.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
