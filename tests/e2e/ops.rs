//! Operations endpoints of the real binary: liveness and readiness.

use anyhow::Result;
use serde_json::json;

use crate::support::{Gateway, GatewayOptions};

#[tokio::test]
async fn readyz_reports_store_and_each_upstream() -> Result<()> {
    // A port that was free a moment ago: nothing listens on it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let cases = [
        ("no upstream", None, false, 200, json!({})),
        ("demo upstream", None, true, 200, json!({"demo": "ok"})),
        ("upstream down", Some(format!("http://127.0.0.1:{closed}/mcp")), false, 503, json!(null)),
    ];
    for (case, upstream_url, demo_tools, status, upstreams) in cases {
        let gateway = Gateway::start(GatewayOptions { upstream_url, demo_tools, ..GatewayOptions::default() })?;

        let health = gateway.admin_get("/healthz", None).await?;
        assert_eq!(health.status, 200, "{case}: /healthz answers while the process runs");
        let ready = gateway.admin_get("/readyz", None).await?;
        assert_eq!(ready.status, status, "{case}: {}", ready.text);
        assert_eq!(ready.json["checks"]["store"], "ok", "{case}: {}", ready.text);
        if upstreams.is_null() {
            let reason = ready.json["checks"]["upstreams"]["default"].as_str().unwrap_or_default();
            assert!(reason.starts_with("cannot connect to 127.0.0.1"), "{case}: {}", ready.text);
            assert_eq!(ready.json["status"], "not_ready", "{case}");
        } else {
            assert_eq!(ready.json["checks"]["upstreams"], upstreams, "{case}: {}", ready.text);
            assert_eq!(ready.json["status"], "ready", "{case}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn metrics_count_calls_decisions_and_backlog() -> Result<()> {
    let gateway = Gateway::start(GatewayOptions { demo_tools: true, ..GatewayOptions::default() })?;
    for tool in ["calendar.list_events", crate::support::DENIED_TOOL] {
        let body =
            json!({"model_id": crate::support::FULL_MODEL, "session_id": "metrics", "tool_name": tool, "input": {}});
        gateway.rest_call(Some(crate::support::FULL_KEY), &body).await?;
    }

    let metrics = gateway.admin_get("/metrics", None).await?;
    assert_eq!(metrics.status, 200, "{}", metrics.text);
    let content_type = metrics.headers.get("content-type").and_then(|value| value.to_str().ok()).unwrap_or_default();
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
    assert!(metrics.text.ends_with("# EOF\n"), "an OpenMetrics exposition ends with `# EOF`");
    let text = &metrics.text;
    for expected in [
        r#"mcpsec_tool_calls_total{route="rest",decision="allow"} 1"#,
        r#"mcpsec_tool_calls_total{route="rest",decision="deny"} 1"#,
        r#"mcpsec_decisions_total{decision="deny",rule="no-get-env"} 1"#,
        r#"mcpsec_upstream_latency_seconds_count{upstream="demo",status="ok"} 1"#,
        "# TYPE mcpsec_outbox_backlog_events gauge",
    ] {
        assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
    }
    assert!(!text.contains("metrics\""), "no session id in a label:\n{text}");
    Ok(())
}

/// The `ENV` settings, `ENTRYPOINT` and `CMD` of the container image, read from the
/// Dockerfile so that the test runs what the image runs.
struct Image {
    env: Vec<(String, String)>,
    command: Vec<String>,
}

fn image() -> Result<Image> {
    let text = std::fs::read_to_string(crate::support::repo_root()?.join("Dockerfile"))?;
    let joined = text.replace("\\\n", " ");
    // The runtime stage is the last one; its instructions follow the last FROM.
    let runtime = joined.rsplit("\nFROM ").next().unwrap_or_default();
    let mut env = Vec::new();
    let mut command = Vec::new();
    for line in runtime.lines().map(str::trim) {
        if let Some(settings) = line.strip_prefix("ENV ") {
            for setting in settings.split_whitespace() {
                let (name, value) =
                    setting.split_once('=').ok_or_else(|| anyhow::anyhow!("ENV without `=`: {line}"))?;
                env.push((name.to_owned(), value.to_owned()));
            }
        }
        for prefix in ["ENTRYPOINT ", "CMD "] {
            if let Some(words) = line.strip_prefix(prefix) {
                let words: Vec<String> = serde_json::from_str(words)?;
                command.extend(words);
            }
        }
    }
    anyhow::ensure!(!env.is_empty() && command.len() >= 2, "no ENV, ENTRYPOINT or CMD found in the Dockerfile");
    Ok(Image { env, command })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_entrypoint_serves_and_stops_cleanly() -> Result<()> {
    use crate::support::process::{ManagedChild, Stream};

    let image = image()?;
    let folder = tempfile::tempdir()?;
    let root = crate::support::repo_root()?;
    // The image's paths, mapped to this machine: the data volume to a fresh folder and the
    // configuration shipped in /etc/mcpsec to the repository's examples, which the image copies.
    let local = |value: &str| {
        value
            .replace("/etc/mcpsec/", &format!("{}/", root.join("examples").display()))
            .replace("/data", &folder.path().join("data").display().to_string())
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let binary = crate::support::gateway_binary()?;

    let start = || -> Result<ManagedChild> {
        let mut command = std::process::Command::new(&binary);
        command.args(image.command.iter().skip(1)).env_clear().current_dir(folder.path());
        for (name, value) in &image.env {
            command.env(name, local(value));
        }
        command.env("PORT", port.to_string()).env("ADMIN_KEY", "image-admin-key-0123");
        let (child, _) =
            ManagedChild::spawn_until_ready("image entrypoint", command, Stream::Stdout, "mcpsec: listening on ")?;
        Ok(child)
    };
    assert_eq!(image.command.first().map(String::as_str), Some("/usr/local/bin/mcpsec"));
    let host = image.env.iter().find(|(name, _)| name == "HOST").map(|(_, value)| value.as_str());
    assert_eq!(host, Some("0.0.0.0"), "the image listens on every interface");

    let mut child = start()?;
    let http = reqwest::Client::builder().no_proxy().build()?;
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    assert_eq!(http.get(url("/healthz")).send().await?.status(), 200);
    assert_eq!(http.get(url("/readyz")).send().await?.status(), 200, "ready without an upstream");
    let call = json!({"model_id": "gpt-4o", "session_id": "image", "tool_name": "calendar.delete_event", "input": {}});
    let reply = http.post(url("/mcp/toolcall")).header("x-model-key", "modelkey-abc123").json(&call).send().await?;
    assert_eq!(reply.status(), 403, "the example policy, shipped in the image, denies deletes");
    let reply: serde_json::Value = reply.json().await?;
    let event_id = reply["event_id"].as_str().unwrap_or_default().to_owned();

    assert_eq!(child.terminate(std::time::Duration::from_secs(30))?, 0, "SIGTERM ends the gateway cleanly");

    // Nothing lost: the event is in the store after a restart on the same volume.
    let _restarted = start()?;
    let trace: serde_json::Value =
        http.get(url("/api/session/image")).header("x-admin-key", "image-admin-key-0123").send().await?.json().await?;
    let ids: Vec<&str> =
        trace["events"].as_array().into_iter().flatten().filter_map(|event| event["event_id"].as_str()).collect();
    assert_eq!(ids, [event_id.as_str()], "{trace}");
    Ok(())
}
