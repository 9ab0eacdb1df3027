//! What `--redis-url` names: one server, a Redis Cluster by its seed nodes, or a master
//! found through Sentinel.
//!
//! | URL | what |
//! |---|---|
//! | `redis://[user:pass@]host:6379[/db]`, `rediss://…` | one server (TLS with `rediss`) |
//! | `redis+cluster://[user:pass@]h1:6379,h2:6379`, `rediss+cluster://…` | a Redis Cluster; any reachable seed is enough, the rest is discovered |
//! | `redis+sentinel://[user:pass@]s1:26379,s2:26379/mymaster[/db]`, `rediss+sentinel://…` | the master that the sentinels name `mymaster`, followed across failovers |
//!
//! Credentials, the query and the fragment (`#insecure` skips TLS verification) apply to
//! every server the node connects to: each cluster node, each sentinel and the master.

/// The Redis deployment a node uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One server.
    Standalone {
        /// Its URL, as given.
        url: String,
    },
    /// A Redis Cluster.
    Cluster {
        /// One `redis://` or `rediss://` URL per seed node.
        seeds: Vec<String>,
    },
    /// A master found through Sentinel.
    Sentinel {
        /// One URL per sentinel.
        sentinels: Vec<String>,
        /// The master's name in the sentinels' configuration.
        master: String,
        /// The master's URL with `{addr}` where its `host:port` goes.
        master_url: String,
    },
}

impl RedisTarget {
    /// Reads a URL of one of the forms in the module docs.
    ///
    /// # Errors
    /// Says what is wrong, for the configuration error.
    pub fn parse(url: &str) -> Result<Self, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or("must start with redis://, rediss://, redis+cluster:// or redis+sentinel://")?;
        match scheme {
            "redis" | "rediss" => Ok(Self::Standalone {
                url: url.to_owned(),
            }),
            "redis+cluster" | "rediss+cluster" => {
                let plain = &scheme[..scheme.len() - "+cluster".len()];
                let parts = Parts::split(rest, 6379)?;
                if !parts.path.is_empty() && parts.path != "/" && parts.path != "/0" {
                    return Err("a Redis Cluster has only database 0: drop the path".into());
                }
                Ok(Self::Cluster {
                    seeds: parts
                        .hosts
                        .iter()
                        .map(|h| parts.url(plain, h, ""))
                        .collect(),
                })
            }
            "redis+sentinel" | "rediss+sentinel" => {
                let plain = &scheme[..scheme.len() - "+sentinel".len()];
                let parts = Parts::split(rest, 26379)?;
                let path = parts.path.trim_start_matches('/');
                let (master, db) = path.split_once('/').unwrap_or((path, ""));
                if master.is_empty() {
                    return Err(
                        "names no master: redis+sentinel://s1:26379,s2:26379/mymaster".into(),
                    );
                }
                if !db.is_empty() && db.parse::<u32>().is_err() {
                    return Err(format!("database {db:?} is not a number"));
                }
                let db = if db.is_empty() {
                    String::new()
                } else {
                    format!("/{db}")
                };
                Ok(Self::Sentinel {
                    sentinels: parts
                        .hosts
                        .iter()
                        .map(|h| parts.url(plain, h, ""))
                        .collect(),
                    master: master.to_owned(),
                    master_url: parts.url(plain, "{addr}", &db),
                })
            }
            other => Err(format!(
                "scheme {other}:// is not one of redis, rediss, redis+cluster, rediss+cluster, redis+sentinel, rediss+sentinel"
            )),
        }
    }

    /// Whether a failover or a slot migration can move a channel to another server
    /// while nodes use it.
    pub fn moves(&self) -> bool {
        !matches!(self, Self::Standalone { .. })
    }
}

/// A multi-host URL taken apart.
struct Parts<'a> {
    userinfo: &'a str,
    hosts: Vec<String>,
    path: &'a str,
    /// `?query` and `#fragment`, as given.
    tail: &'a str,
}

impl<'a> Parts<'a> {
    fn split(rest: &'a str, default_port: u16) -> Result<Self, String> {
        let tail_at = rest.find(['?', '#']).unwrap_or(rest.len());
        let (before, tail) = rest.split_at(tail_at);
        let (userinfo, hosts_and_path) = match before.rfind('@') {
            Some(at) => (&before[..=at], &before[at + 1..]),
            None => ("", before),
        };
        let path_at = hosts_and_path.find('/').unwrap_or(hosts_and_path.len());
        let (hosts, path) = hosts_and_path.split_at(path_at);
        let hosts = hosts
            .split(',')
            .map(|h| host_port(h.trim(), default_port))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            userinfo,
            hosts,
            path,
            tail,
        })
    }

    fn url(&self, scheme: &str, host: &str, path: &str) -> String {
        format!("{scheme}://{}{host}{path}{}", self.userinfo, self.tail)
    }
}

/// `host:port`, with the default port when none is given; IPv6 hosts in brackets.
fn host_port(raw: &str, default_port: u16) -> Result<String, String> {
    if raw.is_empty() {
        return Err("lists an empty host".into());
    }
    let port_at = match raw.rfind(']') {
        Some(close) => raw[close..].find(':').map(|i| close + i),
        None => raw.rfind(':'),
    };
    match port_at {
        Some(i) => {
            let (host, port) = (&raw[..i], &raw[i + 1..]);
            if host.is_empty() || port.parse::<u16>().is_err() {
                return Err(format!("{raw:?} is not host:port"));
            }
            Ok(raw.to_owned())
        }
        None => Ok(format!("{raw}:{default_port}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_server_stays_as_given() {
        assert_eq!(
            RedisTarget::parse("rediss://:pw@h:6380/2#insecure").unwrap(),
            RedisTarget::Standalone {
                url: "rediss://:pw@h:6380/2#insecure".into()
            }
        );
    }

    #[test]
    fn a_cluster_is_its_seeds_each_with_the_credentials_and_tls() {
        let t = RedisTarget::parse("rediss+cluster://u:p@a:7000,b,[::1]:7002#insecure").unwrap();
        assert_eq!(
            t,
            RedisTarget::Cluster {
                seeds: vec![
                    "rediss://u:p@a:7000#insecure".into(),
                    "rediss://u:p@b:6379#insecure".into(),
                    "rediss://u:p@[::1]:7002#insecure".into(),
                ]
            }
        );
        assert!(t.moves());
        assert!(RedisTarget::parse("redis+cluster://a:1/3")
            .unwrap_err()
            .contains("database 0"));
    }

    #[test]
    fn sentinel_names_its_master_and_database() {
        let t = RedisTarget::parse("redis+sentinel://:pw@s1,s2:26380/mymaster/1").unwrap();
        assert_eq!(
            t,
            RedisTarget::Sentinel {
                sentinels: vec!["redis://:pw@s1:26379".into(), "redis://:pw@s2:26380".into()],
                master: "mymaster".into(),
                master_url: "redis://:pw@{addr}/1".into(),
            }
        );
        assert!(RedisTarget::parse("redis+sentinel://s1:26379")
            .unwrap_err()
            .contains("names no master"));
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        for (url, says) in [
            ("http://x", "scheme http://"),
            ("x", "must start with"),
            ("redis+cluster://a:1,,b:2", "empty host"),
            ("redis+cluster://a:port", "not host:port"),
            ("redis+sentinel://s:1/m/x", "not a number"),
        ] {
            let e = RedisTarget::parse(url).unwrap_err();
            assert!(e.contains(says), "{url}: {e}");
        }
    }
}
