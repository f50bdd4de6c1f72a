//! The streaming protocols of Kubernetes' `exec`, `attach` and `port-forward`, as kubelet's
//! streaming server (`k8s.io/kubelet/pkg/cri/streaming`) and the `remotecommand` and
//! `portforward` clients speak them. This crate knows nothing of the CRI or of containers:
//!
//! - [`spdy`]: SPDY/3.1 framing, header compression and sessions;
//! - [`ws`]: the channel framing used over WebSocket (`v4.channel.k8s.io`, `v5.channel.k8s.io`);
//! - [`remotecommand`]: protocol negotiation, stream roles and the error-stream status of
//!   exec and attach;
//! - [`portforward`]: the names and headers of port-forward streams.

pub mod client;
pub mod conn;
pub mod portforward;
pub mod remotecommand;
pub mod spdy;
pub mod ws;
