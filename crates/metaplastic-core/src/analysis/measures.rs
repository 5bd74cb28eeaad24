//! The measurements of docs/method.md §7 on plain tensors, each a closed form:
//! - cosine(u, v) = ⟨u, v⟩ / (‖u‖‖v‖) over all entries (undefined when either is zero);
//! - sign agreement = #{ij : u_ij·v_ij > 0} / #{ij : u_ij ≠ 0 and v_ij ≠ 0};
//! - rows changed = #{i : ‖u_i‖ > τ·max_k ‖u_k‖} / rows, τ = 1e-6 (0 when u = 0);
//! - effective rank = exp(−Σ p_i ln p_i), p_i = σ_i / Σ σ_j over the singular values (Roy & Vetterli 2007);
//! - overlap[a][b] = mean cosine of the updates of steps s ≠ t with task(s) = a, task(t) = b.
use crate::Result;
use tch::{Kind, Tensor};

/// Relative threshold below which a row of an update counts as unchanged.
pub const ROW_TOLERANCE: f64 = 1e-6;

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.f_to_kind(Kind::Double)?.f_double_value(&[])?)
}

pub fn cosine(u: &Tensor, v: &Tensor) -> Result<Option<f64>> {
    let (u, v) = (u.f_to_kind(Kind::Double)?, v.f_to_kind(Kind::Double)?);
    let nu = scalar(&u.f_norm()?)?;
    let nv = scalar(&v.f_norm()?)?;
    if nu == 0.0 || nv == 0.0 || !nu.is_finite() || !nv.is_finite() {
        return Ok(None);
    }
    Ok(Some(scalar(&u.f_mul(&v)?.f_sum(Kind::Double)?)? / (nu * nv)))
}

pub fn sign_agreement(u: &Tensor, v: &Tensor) -> Result<Option<f64>> {
    let both = u.f_ne(0.0)?.f_logical_and(&v.f_ne(0.0)?)?;
    let n = scalar(&both.f_sum(Kind::Double)?)?;
    if n == 0.0 {
        return Ok(None);
    }
    let agree = u.f_mul(v)?.f_gt(0.0)?;
    Ok(Some(scalar(&agree.f_sum(Kind::Double)?)? / n))
}

/// Fraction of the rows (postsynaptic neurons) of u [out, in] that change.
pub fn rows_changed(u: &Tensor) -> Result<f64> {
    let norms =
        u.f_to_kind(Kind::Double)?.f_square()?.f_sum_dim_intlist([1i64].as_slice(), false, Kind::Double)?.f_sqrt()?;
    let max = scalar(&norms.f_max()?)?;
    if max == 0.0 {
        return Ok(0.0);
    }
    let changed = scalar(&norms.f_gt(ROW_TOLERANCE * max)?.f_sum(Kind::Double)?)?;
    Ok(changed / u.size()[0] as f64)
}

pub fn effective_rank(m: &Tensor) -> Result<Option<f64>> {
    // σ_i = √λ_i of the smaller Gram matrix (libtorch's CPU SVD takes no driver argument through tch).
    let m = m.f_to_kind(Kind::Double)?;
    let [rows, cols] = m.size()[..] else {
        return Err(crate::Error::Shape(format!("effective rank of a matrix, got shape {:?}", m.size())));
    };
    let gram = if rows <= cols { m.f_matmul(&m.f_transpose(0, 1)?)? } else { m.f_transpose(0, 1)?.f_matmul(&m)? };
    let eig = Tensor::f_linalg_eigvalsh(&gram, "L")?.f_clamp_min(0.0)?.f_sqrt()?;
    let s = Vec::<f64>::try_from(&eig.f_to_device(tch::Device::Cpu)?)?;
    let total: f64 = s.iter().sum();
    if total == 0.0 || !total.is_finite() {
        return Ok(None);
    }
    // Singular values at round-off level of the largest are zero.
    let max = s.iter().copied().fold(0.0, f64::max);
    let s: Vec<f64> = s.into_iter().filter(|&x| x > 1e-7 * max).collect();
    let total: f64 = s.iter().sum();
    let h: f64 = s.iter().map(|&x| x / total).filter(|&p| p > 0.0).map(|p| -p * p.ln()).sum();
    Ok(Some(h.exp()))
}

/// Task × task mean cosine between the updates `rows` [M, n] of M steps labelled `tasks` (pairs s ≠ t;
/// pairs with a zero update are left out). Also the pair-weighted means within (a = b) and across (a ≠ b).
pub struct Overlap {
    pub matrix: Vec<Vec<Option<f64>>>,
    pub within: Option<f64>,
    pub across: Option<f64>,
}

pub fn overlap(rows: &Tensor, tasks: &[usize], n_tasks: usize) -> Result<Overlap> {
    let m = rows.size()[0] as usize;
    let rows = rows.f_to_kind(Kind::Double)?;
    let gram = rows.f_matmul(&rows.f_transpose(0, 1)?)?.f_to_device(tch::Device::Cpu)?;
    let g = Vec::<f64>::try_from(&gram.f_flatten(0, 1)?)?;
    let norm: Vec<f64> = (0..m).map(|i| g[i * m + i].sqrt()).collect();
    let mut sum = vec![vec![0.0; n_tasks]; n_tasks];
    let mut count = vec![vec![0usize; n_tasks]; n_tasks];
    let (mut within, mut across) = ((0.0, 0usize), (0.0, 0usize));
    for s in 0..m {
        for t in 0..m {
            if s == t || norm[s] == 0.0 || norm[t] == 0.0 {
                continue;
            }
            let c = g[s * m + t] / (norm[s] * norm[t]);
            let (a, b) = (tasks[s], tasks[t]);
            sum[a][b] += c;
            count[a][b] += 1;
            let acc = if a == b { &mut within } else { &mut across };
            acc.0 += c;
            acc.1 += 1;
        }
    }
    let mean = |(s, n): (f64, usize)| if n == 0 { None } else { Some(s / n as f64) };
    let matrix = (0..n_tasks).map(|a| (0..n_tasks).map(|b| mean((sum[a][b], count[a][b]))).collect()).collect();
    Ok(Overlap { matrix, within: mean(within), across: mean(across) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[f64], shape: &[i64]) -> Tensor {
        Tensor::from_slice(v).reshape(shape)
    }

    #[test]
    fn cosine_and_signs_match_hand_values() {
        let u = t(&[1.0, 2.0, 0.0, -1.0], &[2, 2]);
        let v = t(&[2.0, -1.0, 3.0, -4.0], &[2, 2]);
        // ⟨u,v⟩ = 2 − 2 + 0 + 4 = 4; ‖u‖ = √6, ‖v‖ = √30.
        let c = cosine(&u, &v).unwrap().unwrap();
        assert!((c - 4.0 / (6f64.sqrt() * 30f64.sqrt())).abs() < 1e-12);
        // Entries nonzero in both: (0,0) agree, (0,1) disagree, (1,1) agree → 2/3.
        assert!((sign_agreement(&u, &v).unwrap().unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(cosine(&u, &u.zeros_like()).unwrap(), None);
    }

    #[test]
    fn rows_changed_counts_nonzero_rows() {
        let u = t(&[0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 3.0], &[4, 2]);
        assert_eq!(rows_changed(&u).unwrap(), 0.5);
        assert_eq!(rows_changed(&u.zeros_like()).unwrap(), 0.0);
    }

    #[test]
    fn effective_rank_of_known_spectra() {
        let eye = t(&[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0], &[3, 3]);
        assert!((effective_rank(&eye).unwrap().unwrap() - 2.0).abs() < 1e-9);
        let d = t(&[3.0, 0.0, 0.0, 1.0], &[2, 2]);
        let h = -(0.75f64 * 0.75f64.ln() + 0.25 * 0.25f64.ln());
        assert!((effective_rank(&d).unwrap().unwrap() - h.exp()).abs() < 1e-9);
        // An outer product has rank one.
        let r1 = t(&[1.0, 2.0, 3.0], &[3, 1]).matmul(&t(&[4.0, -1.0], &[1, 2]));
        assert!((effective_rank(&r1).unwrap().unwrap() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn overlap_of_hand_updates() {
        // Steps 0, 1 of task 0 are parallel; step 2 of task 1 is orthogonal to them; step 3 (task 1) is −step 2.
        let rows = t(&[1.0, 0.0, 2.0, 0.0, 0.0, 1.0, 0.0, -1.0], &[4, 2]);
        let o = overlap(&rows, &[0, 0, 1, 1], 2).unwrap();
        assert_eq!(o.matrix[0][0], Some(1.0));
        assert_eq!(o.matrix[1][1], Some(-1.0));
        assert_eq!(o.matrix[0][1], Some(0.0));
        assert_eq!(o.within, Some(0.0));
        assert_eq!(o.across, Some(0.0));
        let single = overlap(&rows.narrow(0, 0, 1), &[0], 1).unwrap();
        assert_eq!(single.matrix[0][0], None);
    }
}
