fn main() {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    afl::fuzz!(|data: &[u8]| limpet_fuzz::proxy_header(&rt, data));
}
