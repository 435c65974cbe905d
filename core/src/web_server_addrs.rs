//! FCGI_WEB_SERVER_ADDRS (spec 3.2): the web servers allowed to connect.
//!
//! "If FCGI_WEB_SERVER_ADDRS was bound, the application checks the peer IP
//! address of the new connection for membership in the list. If the check
//! fails [...] the application responds by closing the connection." The
//! spec shows IPv4 only; IPv6 addresses are accepted too, and an IPv4-mapped
//! IPv6 peer (`::ffff:10.0.0.1`) matches its IPv4 form. Runtimes apply the
//! list to TCP connections, as libfcgi does: a Unix socket is guarded by its
//! file permissions.

use core::net::IpAddr;

/// The environment variable the spec names.
pub const FCGI_WEB_SERVER_ADDRS: &str = "FCGI_WEB_SERVER_ADDRS";

/// Default capacity of a [`WebServerAddrs`] list.
pub const DEFAULT_WEB_SERVER_ADDRS: usize = 16;

/// An allow-list of web server addresses, parsed from a comma-separated list
/// such as `199.170.183.28,199.170.183.71,::1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebServerAddrs<const N: usize = DEFAULT_WEB_SERVER_ADDRS> {
    addrs: heapless::Vec<IpAddr, N>,
}

/// A list that cannot be used. Runtimes refuse to start with it: an
/// allow-list that cannot be read must not turn into "allow everyone".
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum WebServerAddrsError {
    /// Entry number `index` (from 0) is not an IPv4 or IPv6 address.
    #[error("FCGI_WEB_SERVER_ADDRS: entry {index} is not an IP address")]
    Invalid {
        /// The entry's position in the list.
        index: usize,
    },
    /// More addresses than the list holds.
    #[error("FCGI_WEB_SERVER_ADDRS: more than {capacity} addresses")]
    TooMany {
        /// The list's capacity.
        capacity: usize,
    },
}

impl<const N: usize> WebServerAddrs<N> {
    /// Parses a comma-separated list; spaces around entries are allowed,
    /// empty entries are not.
    pub fn parse(list: &str) -> Result<Self, WebServerAddrsError> {
        let mut addrs = heapless::Vec::new();
        for (index, entry) in list.split(',').enumerate() {
            let ip: IpAddr = entry
                .trim()
                .parse()
                .map_err(|_| WebServerAddrsError::Invalid { index })?;
            addrs
                .push(ip.to_canonical())
                .map_err(|_| WebServerAddrsError::TooMany { capacity: N })?;
        }
        Ok(WebServerAddrs { addrs })
    }

    /// Whether a connection from `peer` is allowed.
    pub fn allows(&self, peer: IpAddr) -> bool {
        self.addrs.contains(&peer.to_canonical())
    }

    /// The addresses, as parsed.
    pub fn addrs(&self) -> &[IpAddr] {
        &self.addrs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_spec_example_and_ipv6() {
        let addrs: WebServerAddrs = WebServerAddrs::parse("199.170.183.28,199.170.183.71").unwrap();
        assert!(addrs.allows("199.170.183.71".parse().unwrap()));
        assert!(!addrs.allows("199.170.183.72".parse().unwrap()));

        let addrs: WebServerAddrs = WebServerAddrs::parse(" 127.0.0.1 , ::1,fe80::1").unwrap();
        assert_eq!(addrs.addrs().len(), 3);
        assert!(addrs.allows("::1".parse().unwrap()));
        assert!(
            addrs.allows("::ffff:127.0.0.1".parse().unwrap()),
            "mapped IPv4"
        );
        assert!(!addrs.allows("::2".parse().unwrap()));
        // A mapped address in the list matches the plain IPv4 peer too.
        let mapped: WebServerAddrs = WebServerAddrs::parse("::ffff:10.1.2.3").unwrap();
        assert!(mapped.allows("10.1.2.3".parse().unwrap()));
    }

    #[test]
    fn refuses_bad_lists() {
        for (bad, index) in [
            ("", 0),
            ("127.0.0.1,", 1),
            ("localhost", 0),
            ("1.1.1.1,300.1.1.1", 1),
            ("1.2.3.4/24", 0),
        ] {
            assert_eq!(
                WebServerAddrs::<4>::parse(bad),
                Err(WebServerAddrsError::Invalid { index }),
                "{bad:?}"
            );
        }
        assert_eq!(
            WebServerAddrs::<2>::parse("::1,::2,::3"),
            Err(WebServerAddrsError::TooMany { capacity: 2 })
        );
    }
}
