//! Drives a live CRI endpoint with tiny workloads.
//!
//! Needs `KRIO_BENCH_ENDPOINT` (e.g. `unix:///tmp/krio-bench-ctrd/containerd.sock`); FAILS if unset.
//! Optional: `KRIO_BENCH_IMAGE` (default `127.0.0.1:5000/krio-test/busybox:latest`),
//! `KRIO_BENCH_RUNTIME` (label and helper-process naming; default `krio`),
//! `KRIO_BENCH_HOST_NETWORK=1` to run pods without CNI.

use std::time::Duration;

use krio_bench::procfs::{listener_pid, ProcMatcher};
use krio_bench::report::Results;
use krio_bench::workloads::{self, busy, calls, memory, pull, start, stream, PodTemplate};
use krio_bench::CriClient;

fn endpoint() -> String {
    std::env::var("KRIO_BENCH_ENDPOINT").unwrap_or_else(|_| {
        panic!(
            "KRIO_BENCH_ENDPOINT is not set: this test needs a live CRI endpoint \
             (e.g. unix:///tmp/krio-bench-ctrd/containerd.sock or the krio daemon's socket)"
        )
    })
}

#[tokio::test(flavor = "current_thread")]
async fn drives_live_endpoint() {
    let ep = endpoint();
    let image = std::env::var("KRIO_BENCH_IMAGE")
        .unwrap_or_else(|_| "127.0.0.1:5000/krio-test/busybox:latest".to_owned());
    let runtime = std::env::var("KRIO_BENCH_RUNTIME").unwrap_or_else(|_| "krio".to_owned());
    let client = CriClient::connect(&ep)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to KRIO_BENCH_ENDPOINT={ep}: {e}"));
    let run_id = format!("test-{}", std::process::id());
    let logs = tempfile::tempdir().unwrap();
    let mut tpl = PodTemplate::new(&image, &run_id);
    tpl.log_root = Some(logs.path().to_owned());
    tpl.host_network = std::env::var("KRIO_BENCH_HOST_NETWORK").is_ok_and(|v| v == "1");
    let out = tempfile::tempdir().unwrap();

    let p = start::StartParams {
        sequential_runs: 2,
        parallel_width: 2,
        parallel_rounds: 1,
        warmup: 1,
    };
    let (s, d) = start::run(&client, &tpl, &runtime, 0, p)
        .await
        .expect("start workload");
    assert_eq!(s.metrics["total"].samples.len(), 2);
    assert_eq!(s.metrics["parallel_total"].samples.len(), 2);
    for v in &s.metrics["total"].samples {
        assert!(
            *v > 0.0 && *v < 60_000.0,
            "implausible start latency {v} ms"
        );
    }
    assert_eq!(d.metrics["total"].samples.len(), 2);
    s.write(out.path()).unwrap();
    d.write(out.path()).unwrap();

    let c = calls::run(
        &client,
        &tpl,
        &runtime,
        0,
        calls::CallsParams {
            pods: 2,
            containers_per_pod: 2,
            iterations: 5,
            warmup: 1,
        },
    )
    .await
    .expect("calls workload");
    for m in ["status", "list_containers", "container_status"] {
        assert_eq!(c.metrics[m].samples.len(), 5, "metric {m}");
    }
    c.write(out.path()).unwrap();

    let sock = krio_bench::client::socket_path(&ep).unwrap();
    let pid = listener_pid(&sock).expect("daemon pid from the socket");
    let procs = ProcMatcher::for_runtime(&runtime, pid, &sock);
    let m = memory::run(
        &client,
        &tpl,
        &procs,
        &runtime,
        0,
        &memory::MemoryParams {
            levels: vec![0, 1],
            settle: Duration::from_millis(200),
        },
    )
    .await
    .expect("memory workload");
    assert!(m.metrics["daemon_rss_idle"].samples[0] > 1e6);
    assert!(m.metrics["total_pss_1pods"].samples[0] >= m.metrics["daemon_pss_1pods"].samples[0]);
    assert!(
        m.metrics["monitor_count_1pods"].samples[0] >= 1.0,
        "no {:?} helper process found for a running pod",
        procs.monitor_names
    );
    m.write(out.path()).unwrap();

    let st = stream::run(
        &client,
        &tpl,
        &procs,
        &runtime,
        0,
        stream::StreamParams {
            exec_runs: 2,
            warmup: 0,
            settle: Duration::from_millis(50),
        },
    )
    .await
    .expect("stream workload");
    for m in ["exec", "exec_websocket", "exec_sync"] {
        let v = &st.metrics[m].samples;
        assert_eq!(v.len(), 2, "metric {m}");
        assert!(v.iter().all(|x| *x > 0.0 && *x < 30_000.0), "{m}: {v:?}");
    }
    assert!(st.metrics["monitor_rss_attached"].samples[0] > 1e5);
    assert!(st.metrics["monitor_pss_no_client"].samples[0] > 0.0);
    st.write(out.path()).unwrap();

    let b = busy::run(
        &client,
        &tpl,
        &runtime,
        0,
        busy::BusyParams {
            background_containers: 1,
            parallel_width: 2,
            rounds: 1,
        },
    )
    .await
    .expect("busy workload");
    for m in [
        "list_containers_during_start",
        "container_status_during_start",
        "list_containers_during_teardown",
    ] {
        assert!(!b.metrics[m].samples.is_empty(), "no {m} samples");
    }
    b.write(out.path()).unwrap();

    let pl = pull::run(
        &client,
        &procs,
        &runtime,
        0,
        &pull::PullParams {
            image: image.clone(),
            remove_first: false,
            settle: Duration::ZERO,
            sample_every: Duration::from_millis(5),
            create_after: Some(tpl.clone()),
        },
    )
    .await
    .expect("pull workload");
    assert!(pl.metrics["pull"].samples[0] > 0.0);
    assert!(pl.metrics["peak_rss"].samples[0] > 1e6);
    assert!(pl.metrics["create_container_after_pull"].samples[0] > 0.0);
    pl.write(out.path()).unwrap();

    // Nothing the driver made is left behind.
    assert_eq!(
        workloads::cleanup_labeled(&client, Some(&run_id), None)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        std::fs::read_dir(logs.path()).unwrap().count(),
        0,
        "log dirs left"
    );

    let res = Results::load_dir(out.path()).unwrap();
    assert!(res.row("start", "total").is_some());
    let md = res.render_markdown("r.json", "p.svg", "", "");
    assert!(md.contains("| start | total | ms |"));
    assert!(md.contains("| stream | exec | ms |"));
    assert!(md.contains("| busy | list_containers_during_start | ms |"));
}
