//! The list-streaming RPCs (KEP-5825: `StreamPodSandboxes`, `StreamContainers`,
//! `StreamContainerStats`, `StreamPodSandboxStats`, `StreamPodSandboxMetrics`,
//! `StreamImages`): the same items as the matching List call, sent in chunks so that a node
//! with thousands of containers never reaches kubelet's 16 MiB message limit.

use prost::Message;

/// Largest encoded size of one chunk's items, in bytes: an eighth of kubelet's 16 MiB
/// receive limit, so that a chunk never comes near it whatever the per-message overhead.
pub(crate) const CHUNK_BYTES: usize = 2 << 20;

/// Splits `items` into chunks, in order, each of whose items add up to at most `budget`
/// encoded bytes (field tag and length prefix included). An item larger than `budget` on its
/// own gets a chunk of its own. No chunk is empty; an empty list gives no chunks.
pub(crate) fn chunks<T: Message>(items: Vec<T>, budget: usize) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    let mut size = 0usize;
    for item in items {
        // A repeated message field costs its tag (1 byte for field numbers below 16), the
        // length varint, and the message.
        let len = item.encoded_len();
        let cost = 1 + prost::encoding::encoded_len_varint(len as u64) + len;
        if !current.is_empty() && size + cost > budget {
            out.push(std::mem::take(&mut current));
            size = 0;
        }
        size += cost;
        current.push(item);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use krio_cri::v1 as cri;
    use std::collections::HashMap;

    /// A container record as kubelet's pods make them: labels and annotations of a few KB.
    fn container(i: usize) -> cri::Container {
        let mut annotations = HashMap::new();
        annotations.insert(
            "io.kubernetes.container.terminationMessagePath".to_string(),
            "/dev/termination-log".to_string(),
        );
        annotations.insert(
            "kubectl.kubernetes.io/last-applied-configuration".to_string(),
            "x".repeat(10_000),
        );
        cri::Container {
            id: format!("{i:064x}"),
            pod_sandbox_id: format!("{:064x}", i / 4),
            metadata: Some(cri::ContainerMetadata {
                name: format!("container-{i}"),
                attempt: 0,
            }),
            labels: HashMap::from([("io.kubernetes.pod.name".to_string(), format!("pod-{i}"))]),
            annotations,
            ..Default::default()
        }
    }

    #[test]
    fn two_thousand_containers_fit_in_chunks_under_the_limit() {
        let items: Vec<_> = (0..2000).map(container).collect();
        let whole = cri::ListContainersResponse {
            containers: items.clone(),
        };
        // The single List answer is past kubelet's 16 MiB limit...
        assert!(whole.encoded_len() > 16 << 20, "{}", whole.encoded_len());
        let got = chunks(items.clone(), CHUNK_BYTES);
        assert!(got.len() >= 10, "{} chunks", got.len());
        // ...while every chunk, as the message sent, stays within its budget,
        for c in &got {
            let msg = cri::StreamContainersResponse {
                containers: c.clone(),
            };
            assert!(msg.encoded_len() <= CHUNK_BYTES, "{}", msg.encoded_len());
            assert!(!c.is_empty());
        }
        // and the chunks hold the same items in the same order.
        let flat: Vec<_> = got.into_iter().flatten().collect();
        assert_eq!(flat, items);
    }

    #[test]
    fn edges() {
        assert!(chunks(Vec::<cri::Container>::new(), 100).is_empty());
        // An item larger than the budget travels alone.
        let big = container(1);
        let got = chunks(vec![container(0), big.clone(), container(2)], 100);
        assert_eq!(got.len(), 3);
        assert_eq!(got[1], vec![big]);
        // Exactly at the budget: one chunk.
        let small = cri::Container {
            id: "a".into(),
            ..Default::default()
        };
        let cost = 1 + 1 + small.encoded_len();
        assert_eq!(
            chunks(vec![small.clone(), small.clone()], 2 * cost).len(),
            1
        );
        assert_eq!(chunks(vec![small.clone(), small], 2 * cost - 1).len(), 2);
    }
}
