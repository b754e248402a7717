//! The KubeVirt/CDI stand-in.
