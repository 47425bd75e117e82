//! How many copies JetStream keeps of the streams Spine creates
//! (`SPINE_NATS_REPLICAS`): `auto` follows the server the process connected
//! to — one on a server of its own, up to three in a cluster (JetStream's
//! largest useful replication for most streams: a majority of three survives
//! one node) — or a fixed number from 1 to 5.

use async_nats::ServerInfo;
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Replicas {
    #[default]
    Auto,
    Fixed(usize),
}

impl FromStr for Replicas {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "" | "auto" => Ok(Replicas::Auto),
            n => match n.parse::<usize>() {
                Ok(n @ 1..=5) => Ok(Replicas::Fixed(n)),
                _ => Err(format!("{n:?}: auto, or a number of replicas from 1 to 5")),
            },
        }
    }
}

impl fmt::Display for Replicas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Replicas::Auto => f.write_str("auto"),
            Replicas::Fixed(n) => write!(f, "{n}"),
        }
    }
}

impl Replicas {
    /// The replicas a new stream gets on the server described by `info` (the
    /// INFO it sent when the client connected): in a cluster, its servers'
    /// client URLs (`connect_urls`, each server's own included) count the nodes.
    pub fn wanted(&self, info: &ServerInfo) -> usize {
        match self {
            Replicas::Fixed(n) => *n,
            Replicas::Auto if info.cluster.is_some() => info.connect_urls.len().clamp(1, 3),
            Replicas::Auto => 1,
        }
    }

    /// Whether an existing stream with `current` replicas is changed to
    /// `wanted`: a fixed number is applied both ways; `auto` only grows a
    /// stream (a client that saw fewer nodes, e.g. while the cluster formed,
    /// must not shrink one an operator or an earlier relay scaled up).
    pub fn changes(&self, current: usize, wanted: usize) -> bool {
        match self {
            Replicas::Fixed(_) => current != wanted,
            Replicas::Auto => current < wanted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(cluster: Option<&str>, urls: usize) -> ServerInfo {
        ServerInfo {
            cluster: cluster.map(str::to_string),
            connect_urls: (0..urls)
                .map(|i| format!("127.0.0.1:{}", 4222 + i))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn auto_follows_the_cluster_and_fixed_wins() {
        assert_eq!("auto".parse(), Ok(Replicas::Auto));
        assert_eq!("".parse(), Ok(Replicas::Auto));
        assert_eq!("3".parse(), Ok(Replicas::Fixed(3)));
        for bad in ["0", "6", "three", "-1"] {
            assert!(
                bad.parse::<Replicas>().unwrap_err().contains("1 to 5"),
                "{bad}"
            );
        }
        assert_eq!(Replicas::Auto.wanted(&info(None, 0)), 1);
        assert_eq!(Replicas::Auto.wanted(&info(Some("c"), 2)), 2);
        assert_eq!(Replicas::Auto.wanted(&info(Some("c"), 5)), 3);
        assert_eq!(Replicas::Auto.wanted(&info(Some("c"), 0)), 1);
        assert_eq!(Replicas::Fixed(5).wanted(&info(None, 0)), 5);
        assert!(Replicas::Auto.changes(1, 3));
        assert!(!Replicas::Auto.changes(3, 1));
        assert!(Replicas::Fixed(1).changes(3, 1));
        assert!(!Replicas::Fixed(3).changes(3, 3));
    }
}
