//! End to end: the image service against the local registry, checked from inside containers.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::*;
use krio_cri::v1 as cri;
use tonic::Code;

fn spec(r: &str) -> Option<cri::ImageSpec> {
    Some(cri::ImageSpec {
        image: r.to_string(),
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn every_layer_format_and_an_index_run() {
    ensure_images();
    let d = Daemon::start().await;
    let pod = pod_config(&d, "formats");
    let pod_id = run_pod(&d, &pod).await;
    for name in ["busybox-index", "zstd", "uncompressed", "busybox-oci"] {
        pull(&d, &image(name)).await;
        let id = run_container(
            &d,
            &pod_id,
            &pod,
            container_config(
                &format!("c-{name}"),
                &image(name),
                "ls -l /bin/ls | cut -c1-10; id -u; cat /etc/group | head -1",
            ),
        )
        .await;
        let st = wait_exited(&d, &id).await;
        assert_eq!(st.exit_code, 0, "{name}");
        let lines = log_lines(&st);
        assert_eq!(
            lines,
            vec!["-rwxr-xr-x".to_string(), "0".into(), "root:x:0:".into()],
            "{name}"
        );
    }
    remove_pod(&d, &pod_id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn remove_image_by_tag_id_and_digest_and_in_use() {
    ensure_images();
    let d = Daemon::start().await;
    let mut img = d.images().await;
    // busybox and busybox-oci share their config, hence one image id with two tags.
    let a = pull(&d, &image("busybox")).await;
    let b = pull(&d, &image("busybox-oci")).await;
    assert_eq!(a, b);
    let list = img
        .list_images(cri::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images;
    let record = list.iter().find(|i| i.id == a).unwrap().clone();
    assert!(
        record.repo_tags.contains(&image("busybox"))
            && record.repo_tags.contains(&image("busybox-oci"))
    );

    // Short id prefixes, as crictl shows them, find the image.
    let short = &a["sha256:".len()..][..6];
    let st = img
        .image_status(cri::ImageStatusRequest {
            image: spec(short),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.image.map(|i| i.id), Some(a.clone()));

    // Removing one tag keeps the image under the other.
    img.remove_image(cri::RemoveImageRequest {
        image: spec(&image("busybox")),
    })
    .await
    .unwrap();
    let st = img
        .image_status(cri::ImageStatusRequest {
            image: spec(&a),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let kept = st.image.expect("image kept under its other tag");
    assert_eq!(kept.repo_tags, vec![image("busybox-oci")]);
    assert!(st.info.contains_key("info"));
    let gone = img
        .image_status(cri::ImageStatusRequest {
            image: spec(&image("busybox")),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        gone.image.is_none(),
        "ImageStatus of a removed tag is empty, not an error"
    );

    // An image a container uses cannot be removed.
    let pod = pod_config(&d, "inuse");
    let pod_id = run_pod(&d, &pod).await;
    let cid = run_container(
        &d,
        &pod_id,
        &pod,
        container_config("user", &image("busybox-oci"), "sleep 100"),
    )
    .await;
    let err = img
        .remove_image(cri::RemoveImageRequest { image: spec(&a) })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains(&cid), "{}", err.message());
    remove_pod(&d, &pod_id).await;

    // By id: every tag goes, the layers are freed, and a second remove succeeds.
    let before = img
        .image_fs_info(cri::ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    let used_before = before.image_filesystems[0]
        .used_bytes
        .as_ref()
        .unwrap()
        .value;
    assert!(used_before > 500_000, "{before:?}");
    assert!(!before.image_filesystems[0]
        .fs_id
        .as_ref()
        .unwrap()
        .mountpoint
        .is_empty());
    img.remove_image(cri::RemoveImageRequest { image: spec(&a) })
        .await
        .unwrap();
    img.remove_image(cri::RemoveImageRequest { image: spec(&a) })
        .await
        .unwrap();
    let list = img
        .list_images(cri::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images;
    assert!(list.iter().all(|i| i.id != a), "{list:?}");
    let after = img
        .image_fs_info(cri::ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    let used_after = after.image_filesystems[0]
        .used_bytes
        .as_ref()
        .unwrap()
        .value;
    assert!(
        used_after + 500_000 < used_before,
        "layers freed: {used_before} -> {used_after}"
    );
    assert_eq!(
        std::fs::read_dir(d.root.join("layers"))
            .map(|r| r.count())
            .unwrap_or(0),
        0
    );

    // By digest reference.
    pull(&d, &image("layered")).await;
    let list = img
        .list_images(cri::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images;
    let layered = list
        .iter()
        .find(|i| i.repo_tags.contains(&image("layered")))
        .unwrap()
        .clone();
    let by_digest = layered.repo_digests[0].clone();
    img.remove_image(cri::RemoveImageRequest {
        image: spec(&by_digest),
    })
    .await
    .unwrap();
    let st = img
        .image_status(cri::ImageStatusRequest {
            image: spec(&layered.id),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(st.image.is_none());

    // By a short id prefix, as crictl shows ids: the image goes with all its names.
    let id = pull(&d, &image("layered")).await;
    img.remove_image(cri::RemoveImageRequest {
        image: spec(&id["sha256:".len()..][..6]),
    })
    .await
    .unwrap();
    let list = img
        .list_images(cri::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images;
    assert!(
        list.iter().all(|i| i.id != id),
        "removed by prefix: {list:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_pulls_of_one_image_agree() {
    ensure_images();
    let d = Daemon::start().await;
    let mut handles = Vec::new();
    for _ in 0..4 {
        let sock = d.socket.clone();
        handles.push(tokio::spawn(async move {
            let mut img = krio_cri::v1::image_service_client::ImageServiceClient::new(
                connect(&sock).await.unwrap(),
            );
            img.pull_image(cri::PullImageRequest {
                image: spec(&image("layered")),
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner().image_ref)
        }));
    }
    let mut ids = Vec::new();
    for h in handles {
        ids.push(h.await.unwrap().unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let list = d
        .images()
        .await
        .list_images(cri::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images;
    assert_eq!(list.len(), 1);
}

/// Many simultaneous RemoveImage calls of one image (by id, tag and digest, released together
/// after each has its connection) all succeed, and the image is gone when each one returns:
/// a call that finds the removal under way waits for it (critest "Image Consistency should not
/// fail on simultaneous RemoveImage calls"). Three rounds, to meet the race more than once.
#[tokio::test(flavor = "multi_thread")]
async fn simultaneous_removals_of_one_image_all_succeed() {
    ensure_images();
    let d = Daemon::start().await;
    const CALLS: usize = 12;
    for round in 0..3 {
        let id = pull(&d, &image("layered")).await;
        let status = d
            .images()
            .await
            .image_status(cri::ImageStatusRequest {
                image: spec(&id),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .image
            .unwrap();
        let names = [id.clone(), image("layered"), status.repo_digests[0].clone()];
        let go = std::sync::Arc::new(tokio::sync::Barrier::new(CALLS));
        let mut handles = Vec::new();
        for i in 0..CALLS {
            let sock = d.socket.clone();
            let go = go.clone();
            let name = names[i % names.len()].clone();
            let id = id.clone();
            handles.push(tokio::spawn(async move {
                let mut img = krio_cri::v1::image_service_client::ImageServiceClient::new(
                    connect(&sock).await.unwrap(),
                );
                go.wait().await;
                img.remove_image(cri::RemoveImageRequest { image: spec(&name) })
                    .await
                    .map_err(|e| format!("round {round} call {i} ({name}): {e:?}"))?;
                // Gone as soon as this call returned, whoever did the work.
                let left = img
                    .image_status(cri::ImageStatusRequest {
                        image: spec(&id),
                        verbose: false,
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .image;
                match left {
                    None => Ok(()),
                    Some(i) => Err(format!("round {round}: still there after OK: {i:?}")),
                }
            }));
        }
        let mut failures = Vec::new();
        for h in handles {
            if let Err(e) = h.await.unwrap() {
                failures.push(e);
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
    }
}
