//! Fuzzes IKEv2 message parsing (`vpngw_ctrl::ike::message`): whatever a
//! peer or an attacker sends to UDP 500 or 4500, `parse` and `parse_chain`
//! never panic, and what parses is written again into bytes that parse to
//! the same message (so what vpngw answers with is always well formed).
//!
//! The first byte chooses: a whole message (the rest of the input), or a
//! payload chain (the second byte is its first payload type), as an
//! Encrypted payload decrypts to.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vpngw_ctrl::ike::message;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode & 1 == 0 {
        if let Ok(m) = message::parse(rest) {
            let bytes = m.emit();
            let again = message::parse(&bytes).expect("what vpngw writes parses");
            assert_eq!(again.payloads, m.payloads);
            assert_eq!(again.emit(), bytes);
        }
    } else if let Some((&first, body)) = rest.split_first() {
        if let Ok(p) = message::parse_chain(first, body, 0) {
            let bytes = message::emit_chain(&p);
            let again = message::parse_chain(first, &bytes, 0).expect("what vpngw writes parses");
            assert_eq!(again, p);
        }
    }
});
