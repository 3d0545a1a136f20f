//! The agent client against the real agent in a booted VM: streamed exec, error bodies,
//! streamed upload and download of a tar.gz, the sh path of `run`.
mod common;

use futures::StreamExt;
use hearth_proto::{ExecRequest, Language, RunRequest, StreamEvent};
use hearth_vmm::Error;

fn tar_gz(files: &[(&str, &[u8])]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, name, *data).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_speaks_every_endpoint_it_wraps() {
    let tmp = tempfile::tempdir().unwrap();
    let vm = common::boot(&common::spec(tmp.path(), "client")).await;
    let _reap = common::reap(&vm);
    let agent = vm.agent();

    // Streamed exec: output events, then exactly one exit event, last.
    let mut events = agent
        .exec_stream(&ExecRequest {
            cmd: "echo one; echo two >&2; exit 4".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let (mut out, mut err, mut exit) = (String::new(), String::new(), None);
    while let Some(ev) = events.next().await {
        assert!(exit.is_none(), "nothing may follow the exit event");
        match ev.unwrap() {
            StreamEvent::Stdout(s) => out.push_str(&s),
            StreamEvent::Stderr(s) => err.push_str(&s),
            StreamEvent::Exit(r) => exit = Some(r.exec.exit_code),
        }
    }
    assert_eq!(
        (out.as_str(), err.as_str(), exit),
        ("one\n", "two\n", Some(4))
    );

    // The agent's error body becomes Error::Agent.
    match agent.exec(&ExecRequest::default()).await {
        Err(Error::Agent { status, code, .. }) => {
            assert!((400..500).contains(&status), "{status}");
            assert!(!code.is_empty());
        }
        other => panic!("expected an agent error, got {other:?}"),
    }

    // Upload streamed in two chunks, then download it back as tar.gz.
    let archive = tar_gz(&[("dir/a.txt", b"alpha\n")]);
    let (first, second) = archive.split_at(archive.len() / 2);
    let chunks = vec![
        Ok(bytes::Bytes::copy_from_slice(first)),
        Ok(bytes::Bytes::copy_from_slice(second)),
    ];
    let up = agent
        .upload("/workspace/up", futures::stream::iter(chunks))
        .await
        .unwrap();
    assert_eq!(up.files, 1, "{up:?}");
    let run = agent
        .run(
            Language::Sh,
            &RunRequest {
                code: Some("cat /workspace/up/dir/a.txt".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(run.exec.stdout, "alpha\n");

    let mut body = Vec::new();
    let mut stream = agent.download("/workspace/up/dir/a.txt").await.unwrap();
    while let Some(chunk) = stream.next().await {
        body.extend_from_slice(&chunk.unwrap());
    }
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(&body[..]));
    let mut found = false;
    for entry in tar.entries().unwrap() {
        let mut e = entry.unwrap();
        if e.path().unwrap().ends_with("a.txt") {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut e, &mut s).unwrap();
            assert_eq!(s, "alpha\n");
            found = true;
        }
    }
    assert!(found, "a.txt in the downloaded archive");

    // A buffered exec answers only when the program ends: the wait for it is bounded by
    // the call's own timeout, not by the (here shortened) connect timeout.
    let mut patient = agent.clone();
    patient.connect_timeout = std::time::Duration::from_secs(2);
    let slow = patient
        .exec(&ExecRequest {
            cmd: "sleep 4; echo done".into(),
            timeout_ms: Some(20_000),
            ..Default::default()
        })
        .await
        .expect("a buffered exec longer than connect_timeout");
    assert_eq!((slow.exit_code, slow.stdout.as_str()), (0, "done\n"));

    // Firewall: a VM without a NIC accepts a deny-all policy.
    agent
        .firewall(&hearth_proto::FirewallRequest {
            outbound: false,
            allow: vec![],
        })
        .await
        .unwrap();
    vm.destroy().await.unwrap();
}
