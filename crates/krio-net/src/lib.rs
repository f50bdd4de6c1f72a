//! Pod namespaces (pinned without a pause process) and CNI plugin invocation.
//!
//! * [`ns`]: create network / IPC / UTS namespaces for a pod sandbox and keep them alive with bind
//!   mounts (`pin_namespaces` / `unpin_namespaces`), like `ip netns add`.
//! * [`cni`]: attach / detach / check the pod network through CNI plugins (spec 0.4.0 and 1.0.0).

mod error;
mod sys;

pub mod cni;
pub mod ns;

pub use cni::{
    install_default_config, Cni, CniConfig, NetworkStatus, PodNetwork, PortMapping, Protocol,
};
pub use error::NetError;
pub use ns::{
    pin_namespaces, pin_namespaces_in_userns, unpin_namespaces, IdMap, NsKind, PinnedNamespaces,
};
