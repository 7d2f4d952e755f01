//! Who may reach an isolated drill's clone. By default only the drctl
//! host (loopback), which is right for the lab and wrong for workload
//! copies in a cluster: pods cannot reach the drctl host's loopback. The
//! clone step's `listen` (an address of the drctl host to listen on as
//! well as loopback), `advertise` (what `outputs.host`, the drill DNS
//! record and the drill NetworkPolicy's ipBlock use) and `allow` (the one
//! network whose normal sessions pg_hba.conf accepts, with a password)
//! open it to exactly that network. Replication sessions stay rejected
//! from everywhere, first, so the clone can never become an upstream.

use std::net::{IpAddr, Ipv4Addr};

use crate::decode::{Ctx, MapReader};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reach {
    pub listen: IpAddr,
    pub advertise: IpAddr,
    /// Network (address, prefix length) allowed normal sessions.
    pub allow: (IpAddr, u8),
}

impl Default for Reach {
    fn default() -> Self {
        Reach {
            listen: LOOPBACK,
            advertise: LOOPBACK,
            allow: (LOOPBACK, 32),
        }
    }
}

fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (a, n) = s.split_once('/').unwrap_or((s, ""));
    let ip: IpAddr = a.trim().parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let n: u8 = if n.is_empty() {
        max
    } else {
        n.trim().parse().ok()?
    };
    (n <= max).then_some((ip, n))
}

impl Reach {
    /// Reads `listen`, `advertise` and `allow` from the clone step's
    /// `with`; a wrong value is an error located at it.
    pub fn decode(ctx: &mut Ctx<'_>, r: &mut MapReader<'_>, kind: &str) -> Option<Reach> {
        let mut ok = true;
        let mut ip = |ctx: &mut Ctx<'_>, key: &'static str, n: Option<&crate::yaml::Node>| {
            let n = n?;
            if ctx.deferred(n) {
                return None; // checked once resolved
            }
            let s = ctx.string(n, key)?;
            match s.parse::<IpAddr>() {
                Ok(a) if a.is_unspecified() => {
                    ctx.error(
                        "E-VALUE",
                        n,
                        format!("{kind}: {key} `{s}` is every address"),
                        Some("give one address of the drctl host: the clone must not listen everywhere".into()),
                    );
                    ok = false;
                    None
                }
                Ok(a) => Some(a),
                Err(_) => {
                    ctx.error(
                        "E-VALUE",
                        n,
                        format!("{kind}: {key} `{s}` is not an IP address"),
                        Some("an IPv4 or IPv6 address, e.g. 10.0.3.7".into()),
                    );
                    ok = false;
                    None
                }
            }
        };
        let listen_n = r.opt("listen");
        let advertise_n = r.opt("advertise");
        let listen = ip(ctx, "listen", listen_n);
        let advertise = ip(ctx, "advertise", advertise_n);
        let allow = match r.opt("allow") {
            None => None,
            Some(n) if ctx.deferred(n) => None,
            Some(n) => {
                let s = ctx.string(n, "allow")?;
                match parse_cidr(&s) {
                    Some((_, 0)) => {
                        ctx.error(
                            "E-VALUE",
                            n,
                            format!("{kind}: allow `{s}` admits every address"),
                            Some("the network the workload copies' pods come from, e.g. 10.244.0.0/16".into()),
                        );
                        return None;
                    }
                    Some(c) => Some(c),
                    None => {
                        ctx.error(
                            "E-VALUE",
                            n,
                            format!("{kind}: allow `{s}` is not a network (ADDRESS/PREFIX)"),
                            Some("e.g. 10.244.0.0/16".into()),
                        );
                        return None;
                    }
                }
            }
        };
        if !ok {
            return None;
        }
        let d = Reach::default();
        let listen = listen.unwrap_or(d.listen);
        let advertise = advertise.unwrap_or(listen);
        let allow = allow.unwrap_or(match listen {
            IpAddr::V4(_) => (listen, 32),
            IpAddr::V6(_) => (listen, 128),
        });
        Some(Reach {
            listen,
            advertise,
            allow,
        })
    }

    /// `listen_addresses`: loopback (drctl's own checks and teardown use
    /// it), plus `listen` when that is another address.
    pub fn listen_addresses(&self) -> String {
        if self.listen == LOOPBACK {
            "127.0.0.1".into()
        } else {
            format!("127.0.0.1,{}", self.listen)
        }
    }

    /// pg_hba.conf: replication rejected from everywhere first; sessions
    /// with a password from loopback and the allowed network; nothing else.
    pub fn hba(&self) -> String {
        let mut s = String::from(
            "# drctl isolated drill clone\nlocal all all trust\nhost replication all 0.0.0.0/0 reject\nhost replication all ::/0 reject\nhost all all 127.0.0.1/32 scram-sha-256\n",
        );
        if self.allow != (LOOPBACK, 32) {
            s.push_str(&format!(
                "host all all {}/{} scram-sha-256\n",
                self.allow.0, self.allow.1
            ));
        }
        s.push_str("host all all 0.0.0.0/0 reject\nhost all all ::/0 reject\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::Ctx;
    use crate::diag::Diagnostics;
    use crate::yaml::SourceFile;

    fn decode(yaml: &str) -> (Option<Reach>, Vec<String>) {
        let file = SourceFile::new("t.yaml", yaml);
        let mut diags = Diagnostics::default();
        let node = crate::yaml::parse(&file, &mut diags).expect("yaml");
        let out = {
            let mut ctx = Ctx::new(&file, &mut diags);
            let mut r = MapReader::new(&mut ctx, &node, "clone").unwrap();
            let out = Reach::decode(&mut ctx, &mut r, "postgres.clone_standby");
            r.finish(&mut ctx);
            out
        };
        (out, diags.iter().map(|d| d.message.clone()).collect())
    }

    #[test]
    fn loopback_by_default_and_the_configured_network_only() {
        let (r, errs) = decode("{}");
        assert!(errs.is_empty(), "{errs:?}");
        let r = r.unwrap();
        assert_eq!(r, Reach::default());
        assert_eq!(r.listen_addresses(), "127.0.0.1");
        assert!(!r.hba().contains("0.0.0.0/0 scram"));
        let (r, errs) = decode("{listen: 10.0.3.7, advertise: 10.0.3.7, allow: 10.244.0.0/16}");
        assert!(errs.is_empty(), "{errs:?}");
        let r = r.unwrap();
        assert_eq!(r.listen_addresses(), "127.0.0.1,10.0.3.7");
        let hba = r.hba();
        assert!(
            hba.contains("host all all 10.244.0.0/16 scram-sha-256\n"),
            "{hba}"
        );
        // Replication is rejected before any line that could accept it.
        assert!(hba.find("replication").unwrap() < hba.find("scram").unwrap());
        assert!(!hba.contains("replication all 10.244"), "{hba}");
        let (r, _) = decode("{listen: 10.0.3.7}");
        assert_eq!(r.unwrap().allow, ("10.0.3.7".parse().unwrap(), 32));
    }

    #[test]
    fn garbage_addresses_are_located_errors() {
        for (y, says) in [
            ("{listen: nope}", "listen `nope` is not an IP address"),
            ("{listen: 0.0.0.0}", "is every address"),
            (
                "{advertise: 10.0.0.300}",
                "advertise `10.0.0.300` is not an IP address",
            ),
            ("{allow: 10.0.0.0/33}", "is not a network"),
            ("{allow: 0.0.0.0/0}", "admits every address"),
        ] {
            let (r, errs) = decode(y);
            assert!(r.is_none(), "{y}");
            assert!(errs.iter().any(|e| e.contains(says)), "{y}: {errs:?}");
        }
    }
}
