//! The moto emulator shared by the tests of one test binary that run against the AWS stores:
//! started once on 127.0.0.1 with a port it picks, and stopped when the binary exits.
//! Include it with `#[path = "common/moto.rs"] mod moto;`.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::{Credentials, SharedCredentialsProvider};
use mcpsec_gateway::store::aws::AwsNames;

/// The write end of the guard shell's standard input: the shell kills the server when
/// it closes, which happens when the test binary exits.
struct Server {
    endpoint: String,
    _guard: Mutex<ChildStdin>,
    _shell: Mutex<Child>,
}

static SERVER: OnceLock<Server> = OnceLock::new();

const GUARD_SCRIPT: &str = r#""$1" -H 127.0.0.1 -p 0 & server=$!; read -r _; kill "$server""#;

/// SDK configuration with static credentials, a fixed region and the loopback endpoint.
pub fn config() -> SdkConfig {
    let endpoint = &SERVER.get_or_init(start).endpoint;
    let credentials = Credentials::new("AKIDADMINAPI", "admin-api-secret", None, None, "admin-api-test");
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(SharedCredentialsProvider::new(credentials))
        .endpoint_url(endpoint)
        .build()
}

/// Table and bucket names that no other test uses.
pub fn unique_names() -> AwsNames {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let suffix = format!("{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    AwsNames::new(format!("keys-{suffix}"), format!("sessions-{suffix}"), format!("policy-{suffix}"))
}

fn start() -> Server {
    let server = concat!(env!("CARGO_MANIFEST_DIR"), "/../../infra/.venv/bin/moto_server");
    assert!(std::path::Path::new(server).is_file(), "`{server}` not found; run `bash infra/install-test-deps.sh`");
    let mut child = Command::new("sh")
        .args(["-c", GUARD_SCRIPT, "moto-guard", server])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let guard = child.stdin.take().unwrap();
    let stderr = child.stderr.take().unwrap();

    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !sent && let Some(port) = line.split("Running on http://127.0.0.1:").nth(1) {
                sent = sender.send(port.trim().parse::<u16>().unwrap()).is_ok();
            }
        }
    });
    let port = receiver.recv_timeout(Duration::from_secs(60)).expect("moto_server printed no port within 60 s");
    Server { endpoint: format!("http://127.0.0.1:{port}"), _guard: Mutex::new(guard), _shell: Mutex::new(child) }
}
