//! The kernel's view over rtnetlink, in two namespaces of the test's own
//! joined by a veth: the interface's MAC, MTU and addresses as `ip` set
//! them, and a neighbour the kernel resolves when asked (the peer answers
//! ARP; nothing else resolved it before).

use std::time::{Duration, Instant};
use vpngw_ctrl::kernel::Netlink;
use vpngw_testlab::{veth, Netns};

#[test]
fn interfaces_addresses_and_neighbours() {
    let (gw, peer) = (Netns::create("kernel", "gw"), Netns::create("kernel", "peer"));
    veth(&gw, "gw0", "02:00:00:00:00:01", &peer, "peer0", "02:00:00:00:00:02");
    gw.ip(&["link", "set", "gw0", "mtu", "1400"]);
    gw.ip(&["addr", "add", "192.0.2.1/24", "dev", "gw0"]);
    gw.ip(&["addr", "add", "2001:db8::1/64", "dev", "gw0", "nodad"]);
    peer.ip(&["addr", "add", "192.0.2.2/24", "dev", "peer0"]);
    gw.run(|| {
        let mut nl = Netlink::open().unwrap();
        let itf = nl.interface("gw0").unwrap();
        assert_eq!((itf.mac, itf.mtu), ([2, 0, 0, 0, 0, 1], 1400));
        let mut addrs = nl.addresses(itf.index).unwrap();
        addrs.sort();
        assert_eq!(addrs, vec!["192.0.2.1".parse::<std::net::IpAddr>().unwrap(), "2001:db8::1".parse().unwrap()]);
        let e = nl.interface("nope0").unwrap_err();
        assert!(e.to_string().contains("no interface \"nope0\""), "{e}");

        let peer_ip = "192.0.2.2".parse().unwrap();
        assert!(nl.neighbours(itf.index).unwrap().iter().all(|(ip, _)| *ip != peer_ip), "not resolved yet");
        nl.resolve(itf.index, peer_ip).unwrap();
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            if nl.neighbours(itf.index).unwrap().contains(&(peer_ip, [2, 0, 0, 0, 0, 2])) {
                break;
            }
            assert!(Instant::now() < deadline, "the kernel resolved {peer_ip}");
            std::thread::sleep(Duration::from_millis(20));
        }
        let e = nl.resolve(9999, peer_ip).unwrap_err();
        assert!(e.raw_os_error().is_some(), "a kernel error: {e}");
    });
}
