//! The S3/KMS API server for tests: moto, started by .ci/run through tests/moto_launcher.py,
//! reached over HTTP through the real AWS SDK.

use std::process::{Child, Command, Stdio};

pub const REGION: &str = "us-east-1";

/// The moto endpoint. Outside CI a missing server skips with a visible message; in CI it fails.
pub fn endpoint() -> Option<String> {
    match std::env::var("GITCA_TEST_MOTO_ENDPOINT") {
        Ok(e) if !e.is_empty() => Some(e),
        _ => {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "CI must run the S3/KMS tests: GITCA_TEST_MOTO_ENDPOINT is not set (see .ci/run)"
                );
            }
            // Written to the stderr handle, not eprintln!, so the test harness does not capture it.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: no moto server (set GITCA_TEST_MOTO_ENDPOINT, or run .ci/run)"
            );
            None
        }
    }
}

/// Environment that points gitca (aws-config's default chain) at `endpoint`.
pub fn aws_vars(endpoint: &str) -> Vec<(String, String)> {
    [
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", REGION),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

async fn conf(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new(REGION))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .load()
        .await
}

pub async fn kms(endpoint: &str) -> aws_sdk_kms::Client {
    aws_sdk_kms::Client::new(&conf(endpoint).await)
}

pub async fn s3(endpoint: &str) -> aws_sdk_s3::Client {
    let c = conf(endpoint).await;
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&c)
            .force_path_style(true)
            .build(),
    )
}

pub fn unique(prefix: &str) -> String {
    let mut b = [0u8; 6];
    getrandom::fill(&mut b).unwrap();
    format!("{prefix}-{}", base16ct::lower::encode_string(&b))
}

/// A new asymmetric signing key; returns its ARN.
pub async fn create_key(kms: &aws_sdk_kms::Client, spec: aws_sdk_kms::types::KeySpec) -> String {
    let out = kms
        .create_key()
        .key_spec(spec)
        .key_usage(aws_sdk_kms::types::KeyUsageType::SignVerify)
        .send()
        .await
        .expect("CreateKey");
    out.key_metadata().unwrap().arn().unwrap().to_string()
}

pub async fn create_bucket(s3: &aws_sdk_s3::Client, name: &str) {
    s3.create_bucket()
        .bucket(name)
        .send()
        .await
        .expect("CreateBucket");
}

/// gitca's S3 state store on a new bucket (named from `bucket_prefix`), under `prefix`.
pub async fn state_store(
    s3: &aws_sdk_s3::Client,
    bucket_prefix: &str,
    prefix: &str,
) -> std::sync::Arc<dyn gitca::adapters::state_store::StateStore> {
    let bucket = unique(bucket_prefix);
    create_bucket(s3, &bucket).await;
    let loc = gitca::domain::config::S3Location {
        bucket,
        prefix: prefix.into(),
        region: None,
        endpoint: None,
        force_path_style: true,
        sse_kms_key_id: None,
    };
    let store = gitca::adapters::s3_store::S3Store::with_client(s3.clone(), &loc)
        .await
        .unwrap();
    std::sync::Arc::new(store)
}

pub async fn keys(s3: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Vec<String> {
    let out = s3
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .max_keys(1000)
        .send()
        .await
        .unwrap();
    let mut v: Vec<String> = out
        .contents()
        .iter()
        .filter_map(|o| o.key().map(String::from))
        .collect();
    v.sort();
    v
}

/// The serials of the certificate records under a state prefix (`…/certs/`): each round
/// object's, and each record from before rounds.
pub async fn record_serials(s3: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Vec<String> {
    let mut serials = Vec::new();
    for key in keys(s3, bucket, prefix).await {
        let o = s3
            .get_object()
            .bucket(bucket)
            .key(&key)
            .send()
            .await
            .unwrap();
        let body = o.body.collect().await.unwrap().into_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let recs = match key.contains("/certs/rounds/") {
            true => v.as_array().unwrap().clone(),
            false => vec![v],
        };
        for r in recs {
            assert!(r["certificate"].is_string(), "{key}: a record is signed");
            serials.push(r["serial"].as_str().unwrap().to_string());
        }
    }
    serials.sort();
    serials
}

/// A second moto server that enforces IAM auth (every request with the test credentials is
/// denied), for access-denied tests. Killed on drop.
pub struct AuthMoto {
    child: Child,
    pub endpoint: String,
}

impl Drop for AuthMoto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start_auth_moto() -> AuthMoto {
    spawn_moto(&[], &[("INITIAL_NO_AUTH_ACTION_COUNT", "0")])
}

/// A private moto server with extra launcher arguments (e.g. `--kms-sign-rate 3`).
pub fn start_moto(args: &[&str]) -> AuthMoto {
    spawn_moto(args, &[])
}

fn spawn_moto(args: &[&str], vars: &[(&str, &str)]) -> AuthMoto {
    let python = std::env::var("GITCA_TEST_MOTO_PYTHON")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python").to_string());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(python)
        .args([
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/moto_launcher.py"),
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .args(args)
        .envs(vars.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start moto");
    let endpoint = format!("http://127.0.0.1:{port}");
    // Under a loaded machine (a build beside the tests) Python's imports alone took over 10 s:
    // wait up to a minute, but no longer than the server lives.
    for _ in 0..600 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return AuthMoto { child, endpoint };
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("moto exited ({status}) before it listened on {endpoint}");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("moto did not start on {endpoint}");
}
