//! End to end: the CRI behaviours that cri-tools' critest checks and that are not covered
//! elsewhere (issue 10), each checked against a real daemon, runc and registry.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::*;
use krio_cri::v1 as cri;
use tonic::Code;

/// Stop and Remove of ids that krio never made succeed, whatever they look like; ids that could
/// harm are refused with InvalidArgument naming the field; Status calls say NotFound.
#[tokio::test(flavor = "multi_thread")]
async fn stop_and_remove_of_foreign_ids_succeed() {
    require_prerequisites();
    let d = Daemon::start().await;
    let mut rt = d.runtime().await;
    for unknown in [
        "6f1c2a9e-54b7-4c1e-9d2a-3b8e7f0a1c2d".to_string(), // a UUID, as critest sends
        "NotAnIdOfKrios".to_string(),
        "f".repeat(64),
        "e".repeat(200),
    ] {
        rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: unknown.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("StopPodSandbox {unknown}: {e}"));
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: unknown.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("RemovePodSandbox {unknown}: {e}"));
        rt.stop_container(cri::StopContainerRequest {
            container_id: unknown.clone(),
            timeout: 0,
        })
        .await
        .unwrap_or_else(|e| panic!("StopContainer {unknown}: {e}"));
        rt.remove_container(cri::RemoveContainerRequest {
            container_id: unknown.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("RemoveContainer {unknown}: {e}"));
        let err = rt
            .container_status(cri::ContainerStatusRequest {
                container_id: unknown.clone(),
                verbose: false,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{unknown}: {err:?}");
        let err = rt
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: unknown.clone(),
                verbose: false,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{unknown}: {err:?}");
    }
    for harmful in [
        String::new(),
        "../../etc".to_string(),
        "a/b".to_string(),
        "a\0b".to_string(),
        "a".repeat(4096),
    ] {
        let err = rt
            .remove_container(cri::RemoveContainerRequest {
                container_id: harmful.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{harmful:?}: {err:?}");
        assert!(err.message().contains("container_id"), "{err:?}");
        let err = rt
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: harmful.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{harmful:?}: {err:?}");
        assert!(err.message().contains("pod_sandbox_id"), "{err:?}");
    }
    // Nothing was made along the way.
    assert!(rt
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items
        .is_empty());
}
