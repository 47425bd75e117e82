//! A JetStream cluster of nats-server nodes on loopback that belongs to one test
//! (or `cargo xtask up --nats-cluster`): each node with its own client port,
//! route port and store, routes to all the others. Nodes can be killed with
//! SIGKILL and restarted on the same ports and store.

use crate::proc::{free_port, tempdir::TempDir, Daemon};
use std::process::Command;
use std::time::Duration;

/// The name the nodes' cluster has (the INFO's `cluster`).
pub const CLUSTER_NAME: &str = "spine";

pub struct NatsCluster {
    pub nodes: Vec<Daemon>,
    _store: TempDir,
}

impl NatsCluster {
    /// `size` nodes, started one after the other; JetStream's meta leader is
    /// elected after they see each other (see [`NatsCluster::ready`]).
    pub fn start(size: usize) -> Self {
        let store = TempDir::new();
        let routes: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let all_routes = routes
            .iter()
            .map(|p| format!("nats-route://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(", ");
        let nodes = (0..size)
            .map(|i| {
                let dir = store.path().join(format!("n{i}"));
                std::fs::create_dir_all(&dir).unwrap();
                let (route, all_routes) = (routes[i], all_routes.clone());
                Daemon::start("nats-server (cluster node)", Duration::from_secs(10), move |port| {
                    let conf = dir.join("node.conf");
                    std::fs::write(
                        &conf,
                        format!(
                            "server_name: n{i}\n\
                             listen: 127.0.0.1:{port}\n\
                             jetstream {{ store_dir: \"{}\" }}\n\
                             cluster {{\n  name: {CLUSTER_NAME}\n  listen: 127.0.0.1:{route}\n  routes: [{all_routes}]\n}}\n",
                            dir.display()
                        ),
                    )
                    .unwrap();
                    let mut cmd = Command::new(crate::daemons::nats_binary());
                    cmd.arg("-c").arg(&conf);
                    cmd
                })
            })
            .collect();
        NatsCluster {
            nodes,
            _store: store,
        }
    }

    /// Every node's URL, comma-separated, as `NATS_URL` lists a cluster.
    pub fn url(&self) -> String {
        (0..self.nodes.len())
            .map(|i| self.node_url(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn node_url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[i].port)
    }

    /// A JetStream context on the cluster (any node, failing over).
    pub async fn jetstream(&self) -> async_nats::jetstream::Context {
        let urls: Vec<String> = (0..self.nodes.len()).map(|i| self.node_url(i)).collect();
        let client = async_nats::connect(urls)
            .await
            .expect("connect to the cluster");
        async_nats::jetstream::new(client)
    }

    /// Waits until JetStream answers on the cluster (a meta leader is elected).
    pub async fn ready(&self) {
        let js = self.jetstream().await;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            // A stream replicated on every node: JetStream has a meta leader
            // and sees all the peers. (async-nats 0.51 cannot read nats-server
            // 2.9's account info, so query_account is no probe.)
            let probe = async_nats::jetstream::stream::Config {
                name: "SPINE_CLUSTER_PROBE".into(),
                subjects: vec!["spine.cluster.probe".into()],
                num_replicas: self.nodes.len(),
                ..Default::default()
            };
            match js.get_or_create_stream(probe).await {
                Ok(_) => {
                    let _ = js.delete_stream("SPINE_CLUSTER_PROBE").await;
                    return;
                }
                Err(e) if std::time::Instant::now() > deadline => {
                    panic!("JetStream did not answer on the cluster: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Every message of `stream` (see [`crate::daemons::read_stream`]), retried
    /// while the cluster cannot answer yet (nodes just restarted).
    pub async fn read_all(&self, stream: &str) -> Vec<crate::daemons::Message> {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let js = self.jetstream().await;
            match crate::daemons::try_read_stream(&js, stream).await {
                Ok(messages) => return messages,
                Err(e) if std::time::Instant::now() > deadline => {
                    panic!("reading stream {stream} from the cluster: {e:#}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }
}
