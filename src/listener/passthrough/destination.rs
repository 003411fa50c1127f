//! Which addresses a passthrough tunnel may reach. A passthrough host is somewhere else on the
//! network: never this host's loopback, never a link-local or cloud metadata address (where the
//! node's own credentials are served), and never one of the broker's own listeners, unless an
//! operator opts in per host (`allow_internal_addresses`), and even then not the broker itself.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;

/// AWS, GCP, Azure, OpenStack… instance metadata (IMDS).
const METADATA_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
/// ECS task metadata and credentials (`AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`).
const ECS_METADATA_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 170, 2);
/// Azure's WireServer (the host agent's channel; serves the VM's certificates and extensions).
const AZURE_WIRESERVER_V4: Ipv4Addr = Ipv4Addr::new(168, 63, 129, 16);
/// Alibaba Cloud instance metadata (in the shared-address range, not link-local).
const ALIBABA_METADATA_V4: Ipv4Addr = Ipv4Addr::new(100, 100, 100, 200);
/// AWS IMDS over IPv6 (Nitro).
const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254);
/// The NAT64 well-known prefix `64:ff9b::/96`: on a NAT64 network it reaches the IPv4 address in
/// its last 32 bits, so it is judged as that address.
const NAT64_PREFIX: [u16; 6] = [0x64, 0xff9b, 0, 0, 0, 0];

/// Why an address may not be a passthrough destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forbidden {
    Loopback,
    /// `0.0.0.0/8` or `::`: dialling it reaches this host.
    Unspecified,
    LinkLocal,
    Metadata,
    /// A port the broker itself listens on.
    OwnListener,
    /// The broker's listeners are not all bound yet, so the check above cannot be made.
    ListenersUnknown,
}

impl Forbidden {
    /// What the address is, for the refusal message (`… resolves to 127.0.0.1, a loopback address`).
    pub fn describe(self) -> &'static str {
        match self {
            Forbidden::Loopback => "a loopback address",
            Forbidden::Unspecified => "an unspecified address (this host)",
            Forbidden::LinkLocal => "a link-local address",
            Forbidden::Metadata => "a cloud metadata address",
            Forbidden::OwnListener => "one of the broker's own listeners",
            Forbidden::ListenersUnknown => "not checkable yet: the broker is still binding its listeners",
        }
    }

    /// Whether a host's `allow_internal_addresses` lifts this. Never for the broker's own
    /// listeners: the agent reaches those directly where it is meant to, and a tunnel to them
    /// would only hide who is asking (the broker's API would see the broker as the peer), let
    /// the proxy loop into itself (two connection slots per tunnel, recursively), and put the
    /// broker API one misconfigured entry away from every agent.
    pub fn lifted_by_opt_in(self) -> bool {
        !matches!(self, Forbidden::OwnListener | Forbidden::ListenersUnknown)
    }
}

/// The address a connection to `ip` really goes to: IPv4-mapped (`::ffff:a.b.c.d`),
/// IPv4-compatible (`::a.b.c.d`) and NAT64 (`64:ff9b::a.b.c.d`) forms are their IPv4 address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else { return ip };
    if v6.is_loopback() || v6.is_unspecified() {
        return ip;
    }
    if let Some(v4) = v6.to_ipv4_mapped() {
        return IpAddr::V4(v4);
    }
    let segments = v6.segments();
    let [.., a, b, c, d] = v6.octets();
    if segments[..6] == [0; 6] || segments[..6] == NAT64_PREFIX {
        return IpAddr::V4(Ipv4Addr::new(a, b, c, d));
    }
    ip
}

/// The internal-address class of `ip`, if it has one.
pub fn internal_class(ip: IpAddr) -> Option<Forbidden> {
    match canonical(ip) {
        IpAddr::V4(v4) if [METADATA_V4, ECS_METADATA_V4, AZURE_WIRESERVER_V4, ALIBABA_METADATA_V4].contains(&v4) => Some(Forbidden::Metadata),
        IpAddr::V4(v4) if v4.is_loopback() => Some(Forbidden::Loopback),
        IpAddr::V4(v4) if v4.octets()[0] == 0 => Some(Forbidden::Unspecified),
        IpAddr::V4(v4) if v4.is_link_local() => Some(Forbidden::LinkLocal),
        IpAddr::V6(v6) if v6 == METADATA_V6 => Some(Forbidden::Metadata),
        IpAddr::V6(v6) if v6.is_loopback() => Some(Forbidden::Loopback),
        IpAddr::V6(v6) if v6.is_unspecified() => Some(Forbidden::Unspecified),
        IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80 => Some(Forbidden::LinkLocal),
        _ => None,
    }
}

/// The addresses the broker's listeners are bound to, set once they all are.
#[derive(Debug, Default)]
pub struct OwnListeners(OnceLock<Vec<SocketAddr>>);

impl OwnListeners {
    /// Record the bound listener addresses (the first call wins).
    pub fn set(&self, addresses: Vec<SocketAddr>) {
        let _ = self.0.set(addresses);
    }

    /// Whether a connection to `dest` would reach one of the broker's listeners; None while the
    /// listeners are not known.
    pub fn reached_by(&self, dest: SocketAddr) -> Option<bool> {
        let listeners = self.0.get()?;
        let ip = canonical(dest.ip());
        Some(listeners.iter().filter(|l| l.port() == dest.port()).any(|l| {
            let bound = canonical(l.ip());
            // Dialling 0.0.0.0 or :: connects to this host, so it reaches any local listener on
            // the port; a listener on the unspecified address accepts on every local address.
            bound == ip || ip.is_unspecified() || (bound.is_unspecified() && is_local_address(ip))
        }))
    }
}

/// Whether `ip` is an address of this host: binding a socket to it succeeds only then. (With
/// `net.ipv4.ip_nonlocal_bind=1` every address binds, which only over-refuses the broker's ports.)
fn is_local_address(ip: IpAddr) -> bool {
    ip.is_loopback() || std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// Check one resolved destination.
pub fn check(dest: SocketAddr, allow_internal_addresses: bool, own: &OwnListeners) -> Result<(), Forbidden> {
    match own.reached_by(dest) {
        None => return Err(Forbidden::ListenersUnknown),
        Some(true) => return Err(Forbidden::OwnListener),
        Some(false) => {}
    }
    match internal_class(dest.ip()) {
        Some(class) if !allow_internal_addresses => Err(class),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(s: &str) -> Option<Forbidden> {
        internal_class(s.parse().unwrap())
    }

    #[test]
    fn internal_addresses_are_classified_in_every_spelling() {
        use Forbidden::*;
        for (ip, want) in [
            ("127.0.0.1", Some(Loopback)),
            ("127.255.0.9", Some(Loopback)),
            ("::1", Some(Loopback)),
            ("::ffff:127.0.0.1", Some(Loopback)),
            ("::127.0.0.1", Some(Loopback)),
            ("64:ff9b::7f00:1", Some(Loopback)),
            ("0.0.0.0", Some(Unspecified)),
            ("0.1.2.3", Some(Unspecified)),
            ("::", Some(Unspecified)),
            ("::ffff:0.0.0.0", Some(Unspecified)),
            ("169.254.169.254", Some(Metadata)),
            ("::ffff:169.254.169.254", Some(Metadata)),
            ("::ffff:a9fe:a9fe", Some(Metadata)),
            ("::169.254.169.254", Some(Metadata)),
            ("64:ff9b::169.254.169.254", Some(Metadata)),
            ("169.254.170.2", Some(Metadata)),
            ("::ffff:169.254.170.2", Some(Metadata)),
            ("::169.254.170.2", Some(Metadata)),
            ("fd00:ec2::254", Some(Metadata)),
            ("168.63.129.16", Some(Metadata)),
            ("::ffff:100.100.100.200", Some(Metadata)),
            ("100.100.100.201", None),
            ("FD00:0EC2:0000:0000:0000:0000:0000:0254", Some(Metadata)),
            ("169.254.1.1", Some(LinkLocal)),
            ("::ffff:169.254.1.1", Some(LinkLocal)),
            ("fe80::1", Some(LinkLocal)),
            ("febf::1", Some(LinkLocal)),
            // Ordinary destinations, including ones that look close.
            ("93.184.216.34", None),
            ("10.0.0.1", None),
            ("169.253.255.255", None),
            ("169.255.0.1", None),
            ("fd00:ec2::253", None),
            ("fec0::1", None),
            ("2001:db8::1", None),
            ("::ffff:93.184.216.34", None),
        ] {
            assert_eq!(class(ip), want, "{ip}");
        }
    }

    #[test]
    fn the_opt_in_lifts_internal_classes_but_never_the_brokers_own_listeners() {
        let own = OwnListeners::default();
        let admin: SocketAddr = "127.0.0.1:15000".parse().unwrap();
        assert_eq!(check("93.184.216.34:443".parse().unwrap(), false, &own), Err(Forbidden::ListenersUnknown));
        own.set(vec![admin, "0.0.0.0:15021".parse().unwrap(), "[::1]:15001".parse().unwrap()]);

        assert_eq!(check("93.184.216.34:443".parse().unwrap(), false, &own), Ok(()));
        assert_eq!(check("127.0.0.1:8080".parse().unwrap(), false, &own), Err(Forbidden::Loopback));
        assert_eq!(check("127.0.0.1:8080".parse().unwrap(), true, &own), Ok(()));
        assert_eq!(check("169.254.169.254:80".parse().unwrap(), false, &own), Err(Forbidden::Metadata));
        assert_eq!(check("169.254.169.254:80".parse().unwrap(), true, &own), Ok(()));
        for dest in ["127.0.0.1:15000", "[::ffff:127.0.0.1]:15000", "0.0.0.0:15000", "[::]:15000", "[::1]:15001", "127.0.0.1:15021", "[::1]:15021"] {
            let dest: SocketAddr = dest.parse().unwrap();
            assert_eq!(check(dest, false, &own), Err(Forbidden::OwnListener), "{dest}");
            assert_eq!(check(dest, true, &own), Err(Forbidden::OwnListener), "{dest}");
        }
        // Another loopback address is not the listener bound to 127.0.0.1 (the kernel would not
        // deliver it there); it is still loopback.
        assert_eq!(check("127.0.0.2:15000".parse().unwrap(), true, &own), Ok(()));
        // The wildcard listener's port on an address that is not this host's is someone else's.
        assert_eq!(check("192.0.2.1:15021".parse().unwrap(), false, &own), Ok(()));
    }
}
