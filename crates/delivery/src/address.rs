//! Which webhook targets are allowed (SPEC 7.1 and 7.4): URL shape, and which IP addresses count
//! as globally reachable.
//!
//! Pure functions, no IO: the HTTP client ([`crate::client`]) applies [`is_globally_reachable`] to
//! every address it is about to connect to, and the API applies [`check_url`] when a
//! subscription is created or its URL changes. Tests here only classify addresses; they never
//! send traffic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use url::{Host, Url};

/// SPEC 7.1: a subscription URL is at most this many characters.
pub const MAX_URL_CHARS: usize = 2048;

/// Why a URL cannot be a webhook target. The messages are written for the API's 400 response
/// (`errors: [{"field": "url", "message": ...}]`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("url must be at most 2048 characters")]
    TooLong,
    #[error("url must be an absolute http(s) url")]
    NotAbsolute,
    #[error("url must use https")]
    HttpsRequired,
    #[error("url must use http or https")]
    UnsupportedScheme,
    #[error("url must not contain a user name or password")]
    UserInfo,
    #[error("url must have a host")]
    NoHost,
    #[error("url host is not a globally reachable address")]
    RefusedAddress,
}

/// Parses and checks a webhook URL: absolute, at most 2048 characters, no userinfo, a host, and
/// `https` unless private networks are allowed (then `http` too). An IP-literal host must be
/// globally reachable unless private networks are allowed; so must the names `localhost` and
/// `*.localhost`, which resolve to loopback by definition (RFC 6761) and can be refused without
/// a DNS lookup. Other names are checked when they are resolved, on every connection.
///
/// The WHATWG parser in `url` normalises the obfuscated IPv4 forms (`http://2130706433/`,
/// `http://0x7f.1/`) to the address they mean, so they cannot slip past as names.
pub fn check_url(input: &str, allow_private: bool) -> Result<Url, UrlError> {
    if input.chars().count() > MAX_URL_CHARS {
        return Err(UrlError::TooLong);
    }
    let url = Url::parse(input).map_err(|_| UrlError::NotAbsolute)?;
    match (url.scheme(), allow_private) {
        ("https", _) | ("http", true) => {}
        ("http", false) => return Err(UrlError::HttpsRequired),
        _ => return Err(UrlError::UnsupportedScheme),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlError::UserInfo);
    }
    let refused = match url.host() {
        None => return Err(UrlError::NoHost),
        Some(Host::Domain("")) => return Err(UrlError::NoHost),
        Some(Host::Domain(name)) => {
            let name = name.trim_end_matches('.');
            name == "localhost" || name.ends_with(".localhost")
        }
        Some(Host::Ipv4(ip)) => !is_globally_reachable(IpAddr::V4(ip)),
        Some(Host::Ipv6(ip)) => !is_globally_reachable(IpAddr::V6(ip)),
    };
    if refused && !allow_private {
        return Err(UrlError::RefusedAddress);
    }
    Ok(url)
}

/// Whether `ip` is globally reachable according to the IANA IPv4 and IPv6 special-purpose address
/// registries, plus multicast and IPv4 embedded in IPv6. Anything not known to be a global
/// unicast address is refused: a false refusal costs a user a clear 400, a false acceptance
/// exposes the network qss runs in.
pub fn is_globally_reachable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_global_v4(v4),
        IpAddr::V6(v6) => is_global_v6(v6),
    }
}

fn is_global_v4(ip: Ipv4Addr) -> bool {
    !matches!(
        ip.octets(),
        // "This network" 0.0.0.0/8, private 10/8, shared address space (CGNAT) 100.64/10,
        // loopback 127/8, link-local 169.254/16 (where cloud metadata services live), private
        // 172.16/12.
        [0, ..]
        | [10, ..]
        | [100, 64..=127, ..]
        | [127, ..]
        | [169, 254, ..]
        | [172, 16..=31, ..]
        // IETF protocol assignments 192.0.0/24. Its two globally reachable anycast addresses
        // (.9 PCP, .10 TURN) host no webhook receivers, so the whole block is refused.
        | [192, 0, 0, _]
        // Documentation TEST-NET-1, deprecated 6to4 relay anycast, private 192.168/16,
        // benchmarking 198.18/15, documentation TEST-NET-2 and TEST-NET-3.
        | [192, 0, 2, _]
        | [192, 88, 99, _]
        | [192, 168, ..]
        | [198, 18..=19, ..]
        | [198, 51, 100, _]
        | [203, 0, 113, _]
        // Multicast 224/4, reserved 240/4 and the limited broadcast address.
        | [224..=255, ..]
    )
}

fn is_global_v6(ip: Ipv6Addr) -> bool {
    // IPv4-mapped ::ffff:0:0/96 is how dual-stack sockets reach IPv4 hosts, so it is exactly as
    // reachable as the IPv4 address inside it.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_global_v4(v4);
    }
    let s = ip.segments();
    // NAT64 well-known prefix 64:ff9b::/96: a translator forwards to the embedded IPv4 address.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return is_global_v4(Ipv4Addr::from((u32::from(s[6]) << 16) | u32::from(s[7])));
    }
    // Only 2000::/3 is allocated as global unicast. Outside it are ::/128, ::1, the deprecated
    // IPv4-compatible ::/96 (RFC 4291; refused outright rather than trusted as IPv4, since no
    // current stack routes it as IPv4), the local-use NAT64 64:ff9b:1::/48, discard-only
    // 100::/64, SRv6 5f00::/16, unique local fc00::/7, link-local fe80::/10, site-local
    // fec0::/10 and multicast ff00::/8.
    if s[0] & 0xe000 != 0x2000 {
        return false;
    }
    !matches!(
        s,
        // IETF protocol assignments 2001::/23: Teredo 2001::/32, benchmarking 2001:2::/48,
        // ORCHID 2001:10::/28 and ORCHIDv2 2001:20::/28 among others. The few globally reachable
        // pieces are anycast service addresses (PCP, TURN, AMT, AS112), never webhook receivers.
        [0x2001, 0..=0x1ff, ..]
        // Documentation 2001:db8::/32 and 3fff::/20.
        | [0x2001, 0xdb8, ..]
        | [0x3fff, 0..=0xfff, ..]
        // 6to4 2002::/16 is deprecated (RFC 7526) and relays to an embedded IPv4 address through
        // whatever relay is nearest; refused outright rather than trusting the embedded address.
        | [0x2002, ..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn global(s: &str) -> bool {
        is_globally_reachable(s.parse().expect("ip literal"))
    }

    #[test]
    fn special_purpose_ipv4_addresses_are_not_globally_reachable() {
        for ip in [
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "169.254.169.254",
            "127.0.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "192.0.0.9",
            "192.0.2.1",
            "192.88.99.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert!(!global(ip), "{ip} must be refused");
        }
    }

    #[test]
    fn special_purpose_ipv6_addresses_are_not_globally_reachable() {
        for ip in [
            "::",
            "::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "ff0e::1",
            "100::1",
            "5f00::1",
            "2001::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2001:2::1",
            "2001:10::1",
            "2001:20::1",
            "2001:db8::1",
            "3fff::1",
            "64:ff9b:1::a00:1",
        ] {
            assert!(!global(ip), "{ip} must be refused");
        }
    }

    #[test]
    fn ipv4_mapped_and_nat64_addresses_are_classified_by_the_embedded_address() {
        for ip in [
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(!global(ip), "{ip} must be refused");
        }
        assert!(global("::ffff:8.8.8.8"));
        assert!(global("64:ff9b::808:808"));
    }

    #[test]
    fn six_to_four_and_ipv4_compatible_addresses_are_refused_whatever_they_embed() {
        for ip in [
            "2002:0a00:0001::",
            "2002:0808:0808::",
            "::10.0.0.1",
            "::8.8.8.8",
        ] {
            assert!(!global(ip), "{ip} must be refused");
        }
    }

    #[test]
    fn public_addresses_are_globally_reachable() {
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "100.63.255.255",
            "100.128.0.1",
            "172.15.255.255",
            "172.32.0.1",
            "192.0.1.1",
            "198.17.255.255",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2001:4860:4860::8888",
            "2001:200::1",
            "2620:4f:8000::1",
            "3fff:1000::1",
        ] {
            assert!(global(ip), "{ip} must be allowed");
        }
    }

    #[test]
    fn a_public_https_url_is_accepted() {
        let url = check_url("https://hooks.example.com/qss?x=1", false).expect("valid");
        assert_eq!(url.host_str(), Some("hooks.example.com"));
        assert!(check_url("https://8.8.8.8:8443/hook", false).is_ok());
        assert!(check_url("https://[2606:4700:4700::1111]/hook", false).is_ok());
    }

    #[test]
    fn url_shape_errors_are_reported_with_a_reason() {
        let long = format!("https://example.com/{}", "a".repeat(2048));
        for (input, error) in [
            (long.as_str(), UrlError::TooLong),
            ("/relative/path", UrlError::NotAbsolute),
            ("not a url", UrlError::NotAbsolute),
            ("http://example.com/", UrlError::HttpsRequired),
            ("ftp://example.com/", UrlError::UnsupportedScheme),
            ("mailto:a@example.com", UrlError::UnsupportedScheme),
            ("https://user:pw@example.com/", UrlError::UserInfo),
            ("https://user@example.com/", UrlError::UserInfo),
        ] {
            assert_eq!(check_url(input, false), Err(error.clone()), "{input}");
        }
        assert_eq!(
            UrlError::HttpsRequired.to_string(),
            "url must use https",
            "messages are lowercase sentences fit for a 400 body"
        );
    }

    #[test]
    fn a_url_of_exactly_2048_characters_is_accepted() {
        let prefix = "https://example.com/";
        let url = format!("{prefix}{}", "a".repeat(MAX_URL_CHARS - prefix.len()));
        assert!(check_url(&url, false).is_ok());
    }

    #[test]
    fn non_global_ip_literals_and_localhost_are_refused_unless_private_networks_are_allowed() {
        for input in [
            "https://127.0.0.1/",
            "https://10.0.0.1:8443/x",
            "https://169.254.169.254/latest/meta-data",
            "https://[::1]/",
            "https://[::ffff:10.0.0.1]/",
            "https://[64:ff9b::a00:1]/",
            "https://2130706433/",
            "https://0x7f.1/",
            "https://localhost/",
            "https://api.localhost./",
        ] {
            assert_eq!(
                check_url(input, false),
                Err(UrlError::RefusedAddress),
                "{input}"
            );
            assert!(
                check_url(input, true).is_ok(),
                "{input} with private allowed"
            );
        }
    }

    #[test]
    fn plain_http_is_accepted_only_when_private_networks_are_allowed() {
        assert!(check_url("http://127.0.0.1:8080/hook", true).is_ok());
        assert_eq!(
            check_url("http://127.0.0.1:8080/hook", false),
            Err(UrlError::HttpsRequired)
        );
    }
}
