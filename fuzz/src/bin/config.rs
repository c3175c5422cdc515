fn main() {
    afl::fuzz!(|data: &[u8]| limpet_fuzz::config(data));
}
