//! Kubernetes resource quantities (`2Gi`, `1500M`, `1e9`, `0.5Ti`), read well enough to compare
//! storage sizes.

/// The number of bytes a quantity stands for, or `None` when it is not a quantity.
///
/// Binary suffixes (`Ki` … `Ei`), decimal suffixes (`k`, `M` … `E`, `m` for thousandths) and
/// decimal exponents (`1e9`, `2E3`) are understood, as the API server accepts them. The result is
/// an `f64`: exact for every size a disk has (below 2^53 bytes, 8 PiB), close enough beyond.
pub fn bytes(quantity: &str) -> Option<f64> {
    let text = quantity.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    if number.is_empty() || number.matches('.').count() > 1 {
        return None;
    }
    let value: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        exponent => {
            let digits = exponent
                .strip_prefix('e')
                .or_else(|| exponent.strip_prefix('E'))?;
            10f64.powi(digits.parse::<i32>().ok()?)
        }
    };
    Some(value * factor)
}

#[cfg(test)]
mod tests {
    use super::bytes;

    #[test]
    fn suffixes_and_exponents_read_as_the_api_server_reads_them() {
        assert_eq!(bytes("2Gi"), Some(2.0 * 1024.0 * 1024.0 * 1024.0));
        assert_eq!(bytes("2147483648"), bytes("2Gi"));
        assert_eq!(bytes("1G"), Some(1e9));
        assert_eq!(bytes("1e9"), Some(1e9));
        assert_eq!(bytes("1E3"), Some(1000.0));
        assert_eq!(bytes("0.5Ki"), Some(512.0));
        assert_eq!(bytes("1500m"), Some(1.5));
        assert_eq!(bytes("64M"), Some(64e6));
    }

    #[test]
    fn what_is_not_a_quantity_reads_as_none() {
        for text in ["", "Gi", "2Xi", "1.2.3G", "2 Gi x", "e3"] {
            assert_eq!(bytes(text), None, "{text}");
        }
    }

    #[test]
    fn sizes_compare_across_notations() {
        assert!(bytes("1Gi").unwrap() > bytes("1G").unwrap());
        assert!(bytes("2048Mi").unwrap() == bytes("2Gi").unwrap());
    }
}
