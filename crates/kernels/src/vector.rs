//! Small vector helpers: add, scale, multiply, axpy, argmax and top-k selection.

use crate::simd::has_avx2_fma;

macro_rules! dispatch {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($a:ident: $t:ty),*) $body:block) => {
        $(#[$m])*
        $vis fn $name($($a: $t),*) {
            #[inline(always)]
            fn body($($a: $t),*) $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2($($a: $t),*) { body($($a),*) }
            #[cfg(target_arch = "x86_64")]
            if has_avx2_fma() {
                // SAFETY: AVX2+FMA presence checked at run time.
                return unsafe { avx2($($a),*) };
            }
            body($($a),*)
        }
    };
}

dispatch! {
    /// `out[i] = a[i] + b[i]`. Panics if the lengths differ.
    pub fn add(a: &[f32], b: &[f32], out: &mut [f32]) {
        assert!(a.len() == b.len() && a.len() == out.len(), "add: lengths differ");
        for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
            *o = *x + *y;
        }
    }
}

dispatch! {
    /// `x[i] += y[i]` (e.g. the residual connection). Panics if the lengths differ.
    pub fn add_inplace(x: &mut [f32], y: &[f32]) {
        assert_eq!(x.len(), y.len(), "add_inplace: lengths differ");
        for (a, b) in x.iter_mut().zip(y) {
            *a += *b;
        }
    }
}

dispatch! {
    /// `x[i] *= s`.
    pub fn scale_inplace(x: &mut [f32], s: f32) {
        for a in x.iter_mut() {
            *a *= s;
        }
    }
}

dispatch! {
    /// `x[i] *= y[i]`. Panics if the lengths differ.
    pub fn mul_inplace(x: &mut [f32], y: &[f32]) {
        assert_eq!(x.len(), y.len(), "mul_inplace: lengths differ");
        for (a, b) in x.iter_mut().zip(y) {
            *a *= *b;
        }
    }
}

dispatch! {
    /// `acc[i] += alpha · x[i]` (weighted sums of expert outputs, attention · V).
    /// Panics if the lengths differ.
    pub fn axpy(acc: &mut [f32], alpha: f32, x: &[f32]) {
        assert_eq!(acc.len(), x.len(), "axpy: lengths differ");
        for (a, b) in acc.iter_mut().zip(x) {
            *a += alpha * *b;
        }
    }
}

/// Index of the largest value (the first one on ties); NaNs are ignored. `None` if the
/// slice is empty or all NaN.
pub fn argmax(x: &[f32]) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (i, v) in x.iter().enumerate() {
        if v.is_nan() {
            continue;
        }
        match best {
            Some((_, b)) if *v <= b => {}
            _ => best = Some((i, *v)),
        }
    }
    best.map(|(i, _)| i)
}

/// Writes the indices of the `out.len()` largest values of `x` into `out`, largest first
/// (ties: lower index first; NaNs never selected), and returns how many were written
/// (fewer than `out.len()` only if `x` has fewer non-NaN values). O(n·k), no allocation:
/// meant for router top-k (k ≤ ~16 over a few hundred experts) and sampling short-lists.
pub fn top_k(x: &[f32], out: &mut [usize]) -> usize {
    let k = out.len();
    if k == 0 {
        return 0;
    }
    let mut len = 0usize;
    for (i, &v) in x.iter().enumerate() {
        if v.is_nan() {
            continue;
        }
        // Strictly greater than the current k-th: earlier indices win ties.
        if len == k && v <= x[out[k - 1]] {
            continue;
        }
        // Find the insertion point: after every element >= v.
        let mut pos = if len < k { len } else { k - 1 };
        while pos > 0 && x[out[pos - 1]] < v {
            pos -= 1;
        }
        let end = if len < k { len } else { k - 1 };
        out.copy_within(pos..end, pos + 1);
        out[pos] = i;
        if len < k {
            len += 1;
        }
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn arithmetic() {
        let a: Vec<f32> = (0..19).map(|i| i as f32).collect();
        let b: Vec<f32> = (0..19).map(|i| (i * i) as f32 * 0.5).collect();
        let mut o = vec![0f32; 19];
        add(&a, &b, &mut o);
        for i in 0..19 {
            assert_eq!(o[i], a[i] + b[i]);
        }
        let mut x = a.clone();
        add_inplace(&mut x, &b);
        assert_eq!(x, o);
        let mut x = a.clone();
        mul_inplace(&mut x, &b);
        for i in 0..19 {
            assert_eq!(x[i], a[i] * b[i]);
        }
        let mut x = a.clone();
        scale_inplace(&mut x, -2.5);
        for i in 0..19 {
            assert_eq!(x[i], a[i] * -2.5);
        }
        let mut x = a.clone();
        axpy(&mut x, 0.25, &b);
        for i in 0..19 {
            assert!((x[i] - (a[i] + 0.25 * b[i])).abs() <= 1e-6 * x[i].abs().max(1.0));
        }
    }

    #[test]
    fn argmax_cases() {
        assert_eq!(argmax(&[]), None);
        assert_eq!(argmax(&[f32::NAN]), None);
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), Some(1));
        assert_eq!(argmax(&[f32::NAN, -1.0, f32::NAN, -0.5]), Some(3));
        assert_eq!(argmax(&[f32::NEG_INFINITY]), Some(0));
    }

    #[test]
    fn top_k_matches_sort() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        for n in [0usize, 1, 5, 64, 256] {
            for k in [1usize, 2, 6, 8, 300] {
                // Coarse values force ties.
                let x: Vec<f32> = (0..n).map(|_| rng.random_range(0..20) as f32).collect();
                let mut idx: Vec<usize> = (0..n).collect();
                idx.sort_by(|&a, &b| x[b].partial_cmp(&x[a]).unwrap().then(a.cmp(&b)));
                let mut out = vec![usize::MAX; k];
                let got = top_k(&x, &mut out);
                assert_eq!(got, k.min(n));
                assert_eq!(&out[..got], &idx[..got], "n={n} k={k}");
            }
        }
        let x = [f32::NAN, 1.0, f32::NAN, 2.0];
        let mut out = [0usize; 3];
        assert_eq!(top_k(&x, &mut out), 2);
        assert_eq!(&out[..2], &[3, 1]);
    }
}
