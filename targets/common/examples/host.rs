//! The host run of the firmware's inference: same generated model, same input, same math
//! backend (micromath); prints the lines a firmware must print identically.

use topkit::ArenaStorage;
use topkit_fw::{Input, OUT_LEN, PEAK_BYTES, infer, write_answer, write_arena, write_embedding};

fn main() {
    let mut storage = Box::new(ArenaStorage::<PEAK_BYTES>::new());
    let mut arena = storage.arena();
    let mut out = vec![0f32; OUT_LEN];
    let o = match infer(&mut arena, &mut out, || 0) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("inference failed: {e}");
            std::process::exit(1);
        }
    };
    let mut s = String::new();
    write_answer(&mut s, &o).expect("format");
    write_arena(&mut s, &o).expect("format");
    if o.input == Input::Text {
        write_embedding(&mut s, &out).expect("format");
    }
    print!("{s}");
}
