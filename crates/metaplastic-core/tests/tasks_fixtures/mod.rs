//! Small synthetic data sets in the official layouts. Each image carries its identity in two pixels
//! (row 0: [class marker, drawing + 1]) so tests can tell exactly which image a sampler returned.
#![allow(dead_code)]
use std::io::Write;
use std::path::{Path, PathBuf};
use tch::Tensor;

pub const SIDE: u32 = 105;

pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("metaplastic-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn png(marker: u8, drawing: u8) -> Vec<u8> {
    let mut img = image::GrayImage::from_pixel(SIDE, SIDE, image::Luma([255]));
    img.put_pixel(0, 0, image::Luma([marker]));
    img.put_pixel(1, 0, image::Luma([drawing + 1]));
    for y in 40..60 {
        for x in 40..(40 + marker as u32 % 50) {
            img.put_pixel(x, y, image::Luma([0]));
        }
    }
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png).unwrap();
    out
}

/// (alphabet, character, drawings); the marker of class i (in list order) is 10 + i.
pub type Spec<'a> = &'a [(&'a str, &'a str, usize)];

pub fn spec_grid(alphabets: usize, chars: usize, drawings: usize) -> Vec<(String, String, usize)> {
    let mut v = Vec::new();
    for a in 0..alphabets {
        for c in 0..chars {
            v.push((format!("Alphabet_{a}"), format!("character{:02}", c + 1), drawings));
        }
    }
    v
}

fn entries(spec: &[(String, String, usize)]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (i, (a, c, n)) in spec.iter().enumerate() {
        for d in 0..*n {
            out.push((format!("{a}/{c}/{:04}_{:02}.png", i + 1, d + 1), png(10 + i as u8, d as u8)));
        }
    }
    out
}

/// Writes `<dir>/<top>.zip` (entries under `<top>/`), optionally replacing one entry's bytes.
pub fn write_zip(
    dir: &Path,
    top: &str,
    spec: &[(String, String, usize)],
    replace: Option<(usize, Vec<u8>)>,
) -> PathBuf {
    let path = dir.join(format!("{top}.zip"));
    let mut w = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (k, (name, mut bytes)) in entries(spec).into_iter().enumerate() {
        if let Some((j, b)) = &replace {
            if *j == k {
                bytes = b.clone();
            }
        }
        w.start_file(format!("{top}/{name}"), opts).unwrap();
        w.write_all(&bytes).unwrap();
    }
    w.finish().unwrap();
    path
}

pub fn write_folder(dir: &Path, top: &str, spec: &[(String, String, usize)]) {
    for (name, bytes) in entries(spec) {
        let p = dir.join(top).join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
}

pub fn vals(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(&t.to_kind(tch::Kind::Float).contiguous().view([-1])).unwrap()
}

/// (marker, drawing) of each image in x [N, 1, 105, 105] (inverted polarity: value = 1 − v/255).
pub fn identities(x: &Tensor) -> Vec<(u8, u8)> {
    let n = x.size()[0];
    let flat = vals(&x.reshape([n, -1]).narrow(1, 0, 2));
    flat.chunks(2).map(|p| (((1.0 - p[0]) * 255.0).round() as u8, ((1.0 - p[1]) * 255.0).round() as u8 - 1)).collect()
}
