fn main() {
    afl::fuzz!(|data: &[u8]| limpet_fuzz::set_cookie(data));
}
