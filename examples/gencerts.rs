fn main() {
    let dir = std::env::args().nth(1).expect("dir");
    pgvakt::certs::generate(std::path::Path::new(&dir), "client").expect("certs");
}
