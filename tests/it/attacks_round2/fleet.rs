//! A fleet's signed deliveries: one host's may not run on another.

use crate::support::TestEnv;
use crate::support::docker::unique_name;
use crate::support::serve::Serve;

/// A fleet's hosts run the same hook with the same signing secret (README, "Targets that span
/// hosts": `secret_env = "PIPE_PROD_SECRET"` for every host), and each receiver remembers only
/// the delivery ids it was sent itself. So whoever captures the release pipe posted to one host
/// (the README's own example posts over plain `http://{host}:9010`) could, within the replay
/// window, make every other host run it: a host the fleet never asked (a later batch, after a
/// failure stopped the batches), or one it has since rolled back. The fleet's signed body names
/// the host it goes to (`host`, as `hosts` spells it: here both receivers are on this machine,
/// so the port tells them apart), and a receiver runs only a body that names it.
#[test]
fn a_delivery_captured_on_its_way_to_one_host_is_not_run_by_another() {
    let secret = "fleet-secret-round2";
    let host = |label: &str| {
        let mut env = TestEnv::new();
        env.env("PIPE_PROD_SECRET", secret);
        let out = env.path().join(format!("{label}-ran"));
        env.config(&format!(
            r#"[serve.hooks.app]
secret_env = "PIPE_PROD_SECRET"
command = {{ argv = ["/bin/sh", "-c", "echo \"ran $PIPE_COMMIT\" >> {out}"] }}
"#,
            out = out.display()
        ));
        let server = Serve::start(&env);
        (env, server, out)
    };
    let (_env_a, host_a, ran_a) = host("a");
    let (_env_b, host_b, ran_b) = host("b");

    // What a fleet posts to host A: the hook, a fresh delivery id, the time, the host.
    let sent_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let body = format!(
        r#"{{"hook":"app","project":"app","ref":"refs/heads/main","commit":"c0ffee0000000000000000000000000000000002","delivery":"{}","sent_at":{sent_at},"host":"127.0.0.1:{}"}}"#,
        unique_name("d").replace("pipe-test-", ""),
        host_a.port
    );
    let signature = crate::support::hub_signature(secret, body.as_bytes());
    let headers = [("X-Hub-Signature-256", signature.as_str())];
    let (status, doc) = host_a.json("POST", "/hooks/app?wait=30", &headers, body.as_bytes());
    assert_eq!(status, 200, "host A runs the release it was sent: {doc}");
    assert_eq!(doc["status"], "succeeded", "{doc}");
    assert_eq!(std::fs::read_to_string(&ran_a).unwrap(), "ran c0ffee0000000000000000000000000000000002\n");

    // The legitimate guard: the same bytes again at host A are a replay.
    let (again, doc) = host_a.json("POST", "/hooks/app", &headers, body.as_bytes());
    assert_eq!(again, 409, "a replay at the host it was sent to is refused: {doc}");

    // The attack: the bytes captured on their way to host A, sent to host B.
    let (replayed, doc) = host_b.json("POST", "/hooks/app?wait=30", &headers, body.as_bytes());
    let ran = std::fs::read_to_string(&ran_b).unwrap_or_default();
    assert!(
        replayed == 403 && ran.is_empty(),
        "host B accepted ({replayed}: {doc}) and ran the delivery pipe sent to host A: {ran:?}"
    );
    let why = doc["error"].as_str().unwrap_or("");
    assert!(why.contains(&format!("sent to host `127.0.0.1:{}`", host_a.port)), "{doc}");
    assert!(why.contains("[serve] names"), "the refusal says how a host takes another name: {doc}");
}
