//! Weighted water-filling: how a round divides one pool's budget between roles, and a
//! role's grant between its frameworks, so that `(held + offered) / weight` comes out as even
//! as the caps allow.

/// Divide `amount` between `items` of `(usage, weight, cap)` so that `(usage + x) / weight` is
/// as even as possible with `x <= cap` and `sum(x) <= amount` (weighted water-filling).
pub(super) fn waterfill(amount: u64, items: &[(f64, f64, u64)]) -> Vec<u64> {
    let caps: Vec<u64> = items.iter().map(|&(_, _, c)| c.min(amount)).collect();
    let total_cap = caps.iter().fold(0u64, |a, &c| a.saturating_add(c));
    if total_cap <= amount {
        return caps;
    }
    let fill = |level: f64| -> f64 {
        items
            .iter()
            .zip(&caps)
            .map(|(&(u, w, _), &c)| (level * w - u).clamp(0.0, c as f64))
            .sum()
    };
    let mut lo = items
        .iter()
        .map(|&(u, w, _)| u / w)
        .fold(f64::INFINITY, f64::min);
    let mut hi = items
        .iter()
        .zip(&caps)
        .map(|(&(u, w, _), &c)| (u + c as f64) / w)
        .fold(0.0, f64::max);
    let target = amount as f64;
    for _ in 0..100 {
        let mid = lo + (hi - lo) / 2.0;
        if mid <= lo || mid >= hi {
            break;
        }
        if fill(mid) <= target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let mut out: Vec<u64> = items
        .iter()
        .zip(&caps)
        .map(|(&(u, w, _), &c)| ((lo * w - u).max(0.0).floor() as u64).min(c))
        .collect();
    // Floating point may overshoot by a little: trim, then hand out what flooring left.
    let mut sum: u64 = out.iter().sum();
    for x in out.iter_mut().rev() {
        if sum <= amount {
            break;
        }
        let cut = (sum - amount).min(*x);
        *x -= cut;
        sum -= cut;
    }
    let mut left = amount - sum;
    for (x, &c) in out.iter_mut().zip(&caps) {
        if left == 0 {
            break;
        }
        if *x > 0 && *x < c {
            *x += 1;
            left -= 1;
        }
    }
    out
}
