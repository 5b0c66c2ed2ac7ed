//! XDP steering for vpngw: the C program that sends ESP and forwarded traffic
//! to AF_XDP sockets and everything else to the kernel, and its aya loader.
//!
//! Nothing is here yet. The AF_XDP issue builds it; until then no code
//! pretends to steer packets.
