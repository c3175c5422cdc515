fn main() {
    let keys = limpet_fuzz::keyring();
    afl::fuzz!(|data: &[u8]| limpet_fuzz::cookie_codec(&keys, data));
}
