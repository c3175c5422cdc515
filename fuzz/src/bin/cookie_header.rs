fn main() {
    afl::fuzz!(|data: &[u8]| limpet_fuzz::cookie_header(data));
}
