//! ECDSA P-256 checks of many signatures by one key: the CA's, whose every signature gitca
//! checks before it uses it (adapters/signer.rs).
//!
//! A general verify computes `u1·G + u2·Q` for a key `Q` it has never seen: `u2·Q` alone takes
//! about 255 point doublings and 50 additions, three quarters of the verify. For a key that
//! checks thousands of signatures, a table of its multiples made once turns `u2·Q` into at most
//! 37 additions of table points, as AWS-LC already does for `u1·G` with its table of the
//! generator. Both tables here have AWS-LC's layout (37 windows of 7 bits, 64 affine multiples
//! each), and all field, point and scalar arithmetic is AWS-LC's own: the P-256 assembly its
//! general verify runs on. This module lays the tables out and walks them.
//!
//! Only public values take part (the key, the message, the signature), so nothing here needs
//! constant time. The caller ([`crate::domain::csr::SignatureVerifier`]) has AWS-LC's general
//! verify confirm the first acceptance and every rejection, and refuses to go on if they differ;
//! where a walk adds a point to itself (which AWS-LC's point addition leaves undefined) or to
//! its opposite, the general verify decides alone ([`Verdict::Undecided`]).
//!
//! The assembly is internal to AWS-LC (hidden symbols of its static library): gitca builds with
//! aws-lc-sys's default static, prefixed build with assembly, and other targets than x86-64 use
//! the general verify.

// Off x86-64 only `FixedKey::new` (which declines) is used.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]

#[cfg(target_arch = "x86_64")]
use crypto_bigint::U256;

/// A field element or scalar: four 64-bit limbs, least significant first, as the assembly takes
/// them (`U256::to_words` on a 64-bit target).
type Limbs = [u64; 4];

/// A point in Jacobian coordinates, field elements in Montgomery form; `z == 0` is infinity.
/// AWS-LC's `P256_POINT`; aligned as AWS-LC aligns its own.
#[repr(C, align(32))]
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
struct Jacobian {
    x: Limbs,
    y: Limbs,
    z: Limbs,
}

/// An affine point, Montgomery form: AWS-LC's `P256_POINT_AFFINE`.
#[repr(C, align(32))]
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
struct Affine {
    x: Limbs,
    y: Limbs,
}

// The curve's numbers as SEC 2 writes them (big-endian hex). P and N take part in plain
// comparisons and sums; the Montgomery constants only in the assembly's products.
#[cfg(target_arch = "x86_64")]
mod curve {
    use super::{Limbs, U256};

    /// The field prime p.
    pub const P: U256 =
        U256::from_be_hex("ffffffff00000001000000000000000000000000ffffffffffffffffffffffff");
    /// The group order n.
    pub const N: U256 =
        U256::from_be_hex("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551");
    /// 2^256 mod p: one in Montgomery form.
    pub const ONE_MONT: Limbs =
        U256::from_be_hex("00000000fffffffeffffffffffffffffffffffff000000000000000000000001")
            .to_words();
    /// 2^512 mod p: `mul(a, RR_P)` is `a` in Montgomery form.
    pub const RR_P: Limbs =
        U256::from_be_hex("00000004fffffffdfffffffffffffffefffffffbffffffff0000000000000003")
            .to_words();
    /// 2^512 mod n: the same for scalars.
    pub const RR_N: Limbs =
        U256::from_be_hex("66e12d94f3d956202845b2392b6bec594699799c49bd6fa683244c95be79eea2")
            .to_words();
    /// The generator's coordinates.
    pub const G_X: U256 =
        U256::from_be_hex("6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296");
    pub const G_Y: U256 =
        U256::from_be_hex("4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5");
}
#[cfg(target_arch = "x86_64")]
use curve::*;

const WINDOWS: usize = 37;
const ROW: usize = 64;

#[cfg(target_arch = "x86_64")]
mod ffi {
    use super::{Affine, Jacobian, Limbs};
    // The symbols of aws-lc-sys's AWS-LC, under the prefix build.rs found. Declared as in
    // AWS-LC's crypto/fipsmodule/ec/p256-nistz.h.
    unsafe extern "C" {
        #[link_name = concat!(env!("GITCA_AWS_LC_PREFIX"), "ecp_nistz256_mul_mont")]
        pub fn mul_mont(res: *mut Limbs, a: *const Limbs, b: *const Limbs);
        #[link_name = concat!(env!("GITCA_AWS_LC_PREFIX"), "ecp_nistz256_sqr_mont")]
        pub fn sqr_mont(res: *mut Limbs, a: *const Limbs);
        #[link_name = concat!(env!("GITCA_AWS_LC_PREFIX"), "ecp_nistz256_neg")]
        pub fn neg(res: *mut Limbs, a: *const Limbs);
        #[link_name = concat!(env!("GITCA_AWS_LC_PREFIX"), "ecp_nistz256_ord_mul_mont")]
        pub fn ord_mul_mont(res: *mut Limbs, a: *const Limbs, b: *const Limbs);
        #[link_name = concat!(env!("GITCA_AWS_LC_PREFIX"), "beeu_mod_inverse_vartime")]
        pub fn beeu_mod_inverse_vartime(out: *mut Limbs, a: *const Limbs, n: *const Limbs) -> i32;
        #[link_name = concat!(env!("GITCA_AWS_LC_PREFIX"), "ecp_nistz256_point_double")]
        pub fn point_double(r: *mut Jacobian, a: *const Jacobian);
        // Not for `a == b` (neither is infinity): the table is made without such a sum.
        #[link_name = concat!(env!("GITCA_AWS_LC_PREFIX"), "ecp_nistz256_point_add")]
        pub fn point_add(r: *mut Jacobian, a: *const Jacobian, b: *const Jacobian);
        // Nor this one for `a == b`: its result is then infinity, which a walk takes as
        // undecided. `a` may be infinity, and `r` may be `a`.
        #[link_name = concat!(env!("GITCA_AWS_LC_PREFIX"), "ecp_nistz256_point_add_affine")]
        pub fn point_add_affine(r: *mut Jacobian, a: *const Jacobian, b: *const Affine);
    }
}

// Safe wrappers: every argument is a full, initialised value of the declared layout, and the
// functions read and write exactly those (AWS-LC's contract in p256-nistz.h).
#[cfg(target_arch = "x86_64")]
mod arith {
    use super::{Affine, Jacobian, Limbs, ffi};

    pub fn mul(a: &Limbs, b: &Limbs) -> Limbs {
        let mut r = [0; 4];
        unsafe { ffi::mul_mont(&mut r, a, b) };
        r
    }
    pub fn sqr(a: &Limbs) -> Limbs {
        let mut r = [0; 4];
        unsafe { ffi::sqr_mont(&mut r, a) };
        r
    }
    pub fn neg(a: &Limbs) -> Limbs {
        let mut r = [0; 4];
        unsafe { ffi::neg(&mut r, a) };
        r
    }
    pub fn ord_mul(a: &Limbs, b: &Limbs) -> Limbs {
        let mut r = [0; 4];
        unsafe { ffi::ord_mul_mont(&mut r, a, b) };
        r
    }
    /// `a^-1 mod n`, or `None` if `a` has no inverse.
    pub fn ord_inverse(a: &Limbs) -> Option<Limbs> {
        let mut r = [0; 4];
        let n = super::N.to_words();
        (unsafe { ffi::beeu_mod_inverse_vartime(&mut r, a, &n) } == 1).then_some(r)
    }
    /// `a_i^-1 mod n` for every `a_i` (each in 1..n), with one inversion for them all
    /// (Montgomery's trick): three products each instead of an inversion each. None
    /// if the product has no inverse, which values in 1..n cannot give (n is prime).
    pub fn ord_inverse_all(a: &[Limbs]) -> Option<Vec<Limbs>> {
        let Some((first, rest)) = a.split_first() else {
            return Some(Vec::new());
        };
        // prefix[k] = a_0 ... a_k · R^-k (R = 2^256): each step a Montgomery product.
        let mut prefix = Vec::with_capacity(a.len());
        prefix.push(*first);
        for x in rest {
            let last = prefix[prefix.len() - 1];
            prefix.push(ord_mul(&last, x));
        }
        // inv = prefix[k]^-1; then prefix[k]^-1 · prefix[k-1] · R^-1 = a_k^-1, and
        // prefix[k]^-1 · a_k · R^-1 = prefix[k-1]^-1.
        let mut inv = ord_inverse(&prefix[a.len() - 1])?;
        let mut out = vec![[0; 4]; a.len()];
        for k in (1..a.len()).rev() {
            out[k] = ord_mul(&inv, &prefix[k - 1]);
            inv = ord_mul(&inv, &a[k]);
        }
        out[0] = inv;
        Some(out)
    }
    pub fn double(a: &Jacobian) -> Jacobian {
        let mut r = Jacobian::default();
        unsafe { ffi::point_double(&mut r, a) };
        r
    }
    pub fn add(a: &Jacobian, b: &Jacobian) -> Jacobian {
        let mut r = Jacobian::default();
        unsafe { ffi::point_add(&mut r, a, b) };
        r
    }
    pub fn add_affine_in_place(acc: &mut Jacobian, b: &Affine) {
        let acc: *mut Jacobian = acc;
        unsafe { ffi::point_add_affine(acc, acc, b) };
    }
}

#[cfg(target_arch = "x86_64")]
use arith::*;

/// The 37 signed 7-bit digits of a scalar (AWS-LC's Booth recoding, `booth_recode_w7`):
/// `(magnitude, negative)`, magnitude 0 to 64, most significant last.
fn digits(scalar: &Limbs) -> [(u8, bool); WINDOWS] {
    let mut bytes = [0u8; 33];
    for (i, limb) in scalar.iter().enumerate() {
        bytes[8 * i..8 * i + 8].copy_from_slice(&limb.to_le_bytes());
    }
    let recode = |v: u32| -> (u8, bool) {
        let negative = v >> 7 == 1;
        let d = if negative { (1 << 8) - v - 1 } else { v };
        (((d >> 1) + (d & 1)) as u8, negative)
    };
    let mut out = [(0u8, false); WINDOWS];
    out[0] = recode((u32::from(bytes[0]) << 1) & 0xff);
    let mut index = 7usize;
    for d in out.iter_mut().skip(1) {
        let off = (index - 1) / 8;
        let w = u32::from(bytes[off]) | (u32::from(bytes[off + 1]) << 8);
        *d = recode((w >> ((index - 1) % 8)) & 0xff);
        index += 7;
    }
    out
}

/// `(j+1)·2^(7i)·P` at `[i][j]`, affine, for a point P: `WINDOWS` rows, 148 KiB.
struct Table(Box<[[Affine; ROW]]>);

#[cfg(target_arch = "x86_64")]
impl Table {
    /// `None` if a multiple is infinity, which no point of the group gives (its order is a
    /// prime above 2^255): the point was not on the curve.
    fn of(p: &Affine) -> Option<Table> {
        let mut all = Vec::with_capacity(WINDOWS * ROW);
        let mut base = Jacobian {
            x: p.x,
            y: p.y,
            z: ONE_MONT,
        };
        for _ in 0..WINDOWS {
            let start = all.len();
            all.push(base);
            all.push(double(&base));
            for j in 2..ROW {
                all.push(add(&all[start + j - 1], &base));
            }
            // 2^7 times this window's base: twice its 64th multiple.
            base = double(&all[start + ROW - 1]);
        }
        // To affine with one inversion (Montgomery's trick): prefix[k] = z_0 ... z_k.
        let mut prefix = Vec::with_capacity(all.len());
        let mut running = ONE_MONT;
        for pt in &all {
            running = mul(&running, &pt.z);
            prefix.push(running);
        }
        if running == [0; 4] {
            return None;
        }
        let mut inv = inverse_mont(&running);
        // Made on the heap: a thread's stack need not hold it.
        let mut table = vec![[Affine::default(); ROW]; WINDOWS].into_boxed_slice();
        for k in (0..all.len()).rev() {
            let z_inv = if k > 0 {
                mul(&inv, &prefix[k - 1])
            } else {
                inv
            };
            inv = mul(&inv, &all[k].z);
            let z_inv2 = sqr(&z_inv);
            table[k / ROW][k % ROW] = Affine {
                x: mul(&all[k].x, &z_inv2),
                y: mul(&all[k].y, &mul(&z_inv2, &z_inv)),
            };
        }
        Some(Table(table))
    }

    /// Adds `scalar·P` to `acc`. `false` where a sum of two points that are not infinity came
    /// out infinity: they were opposite, or equal, where `point_add_affine` is not defined.
    /// Neither happens to a valid signature but with a chance of about 2^-250.
    fn add_multiple(&self, acc: &mut Jacobian, scalar: &Limbs) -> bool {
        for (row, &(m, negative)) in self.0.iter().zip(digits(scalar).iter()) {
            if m == 0 {
                continue;
            }
            let mut t = row[usize::from(m) - 1];
            if negative {
                t.y = neg(&t.y);
            }
            let was_infinity = acc.z == [0; 4];
            add_affine_in_place(acc, &t);
            if !was_infinity && acc.z == [0; 4] {
                return false;
            }
        }
        true
    }
}

/// `a^(p-2)`: the inverse of a nonzero `a` in Montgomery form. Once per table.
#[cfg(target_arch = "x86_64")]
fn inverse_mont(a: &Limbs) -> Limbs {
    let e = P.wrapping_sub(&U256::from_u8(2)).to_words();
    let mut r = ONE_MONT;
    for bit in (0..256).rev() {
        r = sqr(&r);
        if (e[bit / 64] >> (bit % 64)) & 1 == 1 {
            r = mul(&r, a);
        }
    }
    r
}

/// What the tables say of a signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Valid,
    Invalid,
    /// The walk met a sum the assembly does not define (see `Table::add_multiple`), or the
    /// tables could not check at all: the general verify decides.
    Undecided,
}

/// Checks ECDSA P-256 SHA-256 signatures by one public key, with tables of the generator's and
/// the key's multiples. Made once per run for the CA's key (about 1.5 ms).
pub struct FixedKey {
    g: Table,
    q: Table,
}

impl FixedKey {
    /// For an uncompressed SEC1 point (`04 || x || y`) on the curve. `None` for a point not on
    /// it, another encoding, or where this machine lacks what AWS-LC's own dispatch requires for
    /// the routines used here (x86-64 with AVX): the general verify is used then.
    pub fn new(sec1: &[u8]) -> Option<FixedKey> {
        #[cfg(target_arch = "x86_64")]
        {
            if !std::arch::is_x86_feature_detected!("avx") {
                return None;
            }
            let (&4, xy) = sec1.split_first()? else {
                return None;
            };
            // On the curve, its coordinates below p: the p256 crate's check of a public key.
            p256::PublicKey::from_sec1_bytes(sec1).ok()?;
            // AWS-LC picks its instructions (BMI2, ADX) from the CPU flags it reads here.
            unsafe { aws_lc_sys::CRYPTO_library_init() };
            let point = |x: &U256, y: &U256| Affine {
                x: mul(&x.to_words(), &RR_P),
                y: mul(&y.to_words(), &RR_P),
            };
            let (x, y) = xy.split_at(32);
            let q = point(&U256::from_be_slice(x), &U256::from_be_slice(y));
            Some(FixedKey {
                g: Table::of(&point(&G_X, &G_Y))?,
                q: Table::of(&q)?,
            })
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = sec1;
            None
        }
    }

    /// Whether `sig` (DER `ECDSA-Sig-Value`) is a valid ECDSA signature of SHA-256(`msg`).
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> Verdict {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, msg);
        self.verify_digest(digest.as_ref().try_into().expect("32 bytes"), sig)
    }

    /// [`FixedKey::verify`] of each `(msg, sig)`, in order, with one inversion of `s` for them
    /// all. The inversion was about a fifth of each check: `-- speed` checked 49,000 a second
    /// one by one, 62,000 in jobs of 32.
    pub fn verify_many(&self, items: &[(&[u8], &[u8])]) -> Vec<Verdict> {
        #[cfg(target_arch = "x86_64")]
        {
            let parsed: Vec<Option<Numbers>> = (items.iter())
                .map(|(msg, sig)| {
                    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, msg);
                    Numbers::of(digest.as_ref().try_into().expect("32 bytes"), sig)
                })
                .collect();
            let s: Vec<Limbs> = parsed.iter().flatten().map(|n| n.s.to_words()).collect();
            // Values in 1..n always have inverses; were that to fail, the general verify
            // decides each.
            let Some(w) = ord_inverse_all(&s) else {
                return vec![Verdict::Undecided; items.len()];
            };
            let mut w = w.iter();
            (parsed.iter())
                .map(|n| match n {
                    Some(n) => self.settle(n, w.next().expect("an inverse for each")),
                    None => Verdict::Invalid,
                })
                .collect()
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            items
                .iter()
                .map(|(msg, sig)| self.verify(msg, sig))
                .collect()
        }
    }

    fn verify_digest(&self, digest: &[u8; 32], sig: &[u8]) -> Verdict {
        #[cfg(target_arch = "x86_64")]
        {
            let Some(n) = Numbers::of(digest, sig) else {
                return Verdict::Invalid;
            };
            match ord_inverse(&n.s.to_words()) {
                Some(w) => self.settle(&n, &w),
                None => Verdict::Invalid,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (digest, sig);
            Verdict::Invalid
        }
    }

    /// The check of a signature's numbers, given `w = s^-1 mod n`.
    #[cfg(target_arch = "x86_64")]
    fn settle(&self, &Numbers { e, r, .. }: &Numbers, w: &Limbs) -> Verdict {
        // w·2^256 mod n; a Montgomery product with it is then a plain product mod n.
        let w_mont = ord_mul(w, &RR_N);
        let u1 = ord_mul(&e.to_words(), &w_mont);
        let u2 = ord_mul(&r.to_words(), &w_mont);
        let mut acc = Jacobian::default();
        if !self.g.add_multiple(&mut acc, &u1) || !self.q.add_multiple(&mut acc, &u2) {
            return Verdict::Undecided;
        }
        if acc.z == [0; 4] {
            return Verdict::Invalid;
        }
        // x(acc) mod n == r, compared as X == r·Z² (AWS-LC's `cmp_x_coordinate`): r·Z² is
        // a Montgomery product of plain r and Montgomery Z², so it comes out plain.
        let z2 = sqr(&acc.z);
        let x = mul(&acc.x, &[1, 0, 0, 0]);
        let r_limbs = r.to_words();
        if mul(&r_limbs, &z2) == x {
            return Verdict::Valid;
        }
        // x may be r + n, where r + n < p (less than 2^-128 of signatures).
        let (r_plus_n, carry) = r.carrying_add(&N, crypto_bigint::Limb::ZERO);
        if carry.0 == 0 && r_plus_n < P && mul(&r_plus_n.to_words(), &z2) == x {
            Verdict::Valid
        } else {
            Verdict::Invalid
        }
    }
}

/// A signature's numbers: strict DER with 0 < r, s < n, and the digest mod n.
#[cfg(target_arch = "x86_64")]
struct Numbers {
    e: U256,
    r: U256,
    s: U256,
}

#[cfg(target_arch = "x86_64")]
impl Numbers {
    fn of(digest: &[u8; 32], sig: &[u8]) -> Option<Numbers> {
        let sig = ecdsa::Signature::<p256::NistP256>::from_der(sig).ok()?;
        let (r, s) = sig.split_bytes();
        // The digest mod n: below 2^256 < 2n, so one subtraction at most.
        let e = U256::from_be_slice(digest);
        Some(Numbers {
            e: if e < N { e } else { e.wrapping_sub(&N) },
            r: U256::from_be_slice(&r),
            s: U256::from_be_slice(&s),
        })
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::Verdict::*;
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair,
        UnparsedPublicKey,
    };

    fn key() -> EcdsaKeyPair {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref()).unwrap()
    }

    /// A random scalar mod n.
    fn random_scalar() -> p256::Scalar {
        use p256::elliptic_curve::ops::Reduce;
        let mut b = [0u8; 32];
        aws_lc_rs::rand::SecureRandom::fill(&SystemRandom::new(), &mut b).unwrap();
        <p256::Scalar as Reduce<p256::FieldBytes>>::reduce(&p256::FieldBytes::from(b))
    }

    fn aws_lc_accepts(k: &EcdsaKeyPair, msg: &[u8], sig: &[u8]) -> bool {
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, k.public_key().as_ref())
            .verify(msg, sig)
            .is_ok()
    }

    #[test]
    fn the_constants_are_what_their_names_say() {
        // One and 2^512 in Montgomery form against plain values.
        assert_eq!(mul(&[1, 0, 0, 0], &RR_P), ONE_MONT);
        assert_eq!(mul(&ONE_MONT, &[1, 0, 0, 0]), [1, 0, 0, 0]);
        let two = [2, 0, 0, 0];
        assert_eq!(ord_mul(&ord_mul(&two, &RR_N), &[1, 0, 0, 0]), two);
        // n - 1 squared is 1 mod n: ord_mul with RR_N turns the Montgomery product plain.
        let n_1 = N.wrapping_sub(&U256::ONE).to_words();
        assert_eq!(ord_mul(&ord_mul(&n_1, &n_1), &RR_N), [1, 0, 0, 0]);
        // p - 1 squared is 1 mod p.
        let p_1 = P.wrapping_sub(&U256::ONE).to_words();
        assert_eq!(mul(&mul(&p_1, &p_1), &RR_P), [1, 0, 0, 0]);
        let a = mul(&[12345, 6, 7, 8], &RR_P);
        assert_eq!(mul(&inverse_mont(&a), &a), ONE_MONT);
    }

    #[test]
    fn inverting_many_together_gives_each_one_s_inverse() {
        let random = || U256::from_be_slice(&random_scalar().to_bytes()).to_words();
        let n_1 = N.wrapping_sub(&U256::ONE).to_words();
        for len in [0, 1, 2, 3, 32, 33] {
            let mut values: Vec<Limbs> = (0..len).map(|_| random()).collect();
            if len >= 3 {
                (values[0], values[len / 2], values[len - 1]) = ([1, 0, 0, 0], n_1, n_1);
            }
            let together = ord_inverse_all(&values).unwrap();
            assert_eq!(together.len(), len);
            for (v, w) in values.iter().zip(&together) {
                assert_eq!(Some(*w), ord_inverse(v), "{v:x?}");
                // v·w = 1 mod n, by another route: the Montgomery product, then times R.
                assert_eq!(ord_mul(&ord_mul(v, w), &RR_N), [1, 0, 0, 0]);
            }
        }
    }

    #[test]
    fn checks_many_together_as_it_checks_each_alone() {
        let rng = SystemRandom::new();
        let k = key();
        let fixed = FixedKey::new(k.public_key().as_ref()).unwrap();
        let msgs: Vec<Vec<u8>> = (0..40u32)
            .map(|i| format!("tbs {i}").into_bytes())
            .collect();
        let mut sigs: Vec<Vec<u8>> = (msgs.iter())
            .map(|m| k.sign(&rng, m).unwrap().as_ref().to_vec())
            .collect();
        // Among them: a changed byte of r and of s, a cut one, not DER at all, and a signature
        // of another message.
        sigs[3][6] ^= 1;
        let last = sigs[8].len() - 3;
        sigs[8][last] ^= 0x10;
        sigs[13].pop();
        sigs[21] = b"not a signature".to_vec();
        sigs[34] = sigs[35].clone();
        let items: Vec<(&[u8], &[u8])> = (msgs.iter().zip(&sigs))
            .map(|(m, s)| (m.as_slice(), s.as_slice()))
            .collect();
        let together = fixed.verify_many(&items);
        let alone: Vec<Verdict> = items.iter().map(|(m, s)| fixed.verify(m, s)).collect();
        assert_eq!(together, alone);
        for (i, ((m, s), verdict)) in items.iter().zip(&together).enumerate() {
            let expected = if aws_lc_accepts(&k, m, s) {
                Valid
            } else {
                Invalid
            };
            assert_eq!(*verdict, expected, "signature {i}");
        }
        assert_eq!(together.iter().filter(|v| **v == Invalid).count(), 5);
        assert!(fixed.verify_many(&[]).is_empty());
    }

    #[test]
    fn digits_add_up_to_the_scalar() {
        // Σ ±m·2^(7i) == scalar: the digits reassembled with carries, in 64-bit lanes.
        for scalar in [
            [0u64; 4],
            [1, 0, 0, 0],
            N.to_words(),
            N.wrapping_sub(&U256::ONE).to_words(),
            [u64::MAX; 4],
            [0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210, 0x7f, 1 << 63],
        ] {
            let d = digits(&scalar);
            let mut acc = [0i128; 6];
            for (i, &(m, neg)) in d.iter().enumerate() {
                assert!(m <= 64);
                let v = if neg { -i128::from(m) } else { i128::from(m) };
                let bit = 7 * i;
                acc[bit / 64] += v << (bit % 64);
            }
            for i in 0..5 {
                let carry = acc[i] >> 64;
                acc[i] -= carry << 64;
                acc[i + 1] += carry;
            }
            let got: Vec<u64> = acc[..4].iter().map(|&v| v as u64).collect();
            assert_eq!(got, scalar.to_vec(), "{scalar:x?}");
            assert_eq!(acc[4], 0);
        }
    }

    #[test]
    fn accepts_and_refuses_as_aws_lc_does() {
        let rng = SystemRandom::new();
        for _ in 0..4 {
            let k = key();
            let fixed = FixedKey::new(k.public_key().as_ref()).expect("x86-64 with AVX");
            for i in 0..200u32 {
                let msg = format!("tbs {i} {}", "x".repeat(i as usize));
                let sig = k.sign(&rng, msg.as_bytes()).unwrap();
                let sig = sig.as_ref();
                assert_eq!(
                    fixed.verify(msg.as_bytes(), sig),
                    Valid,
                    "a valid signature, {i}"
                );
                assert!(aws_lc_accepts(&k, msg.as_bytes(), sig));
                // Another message, a changed byte of r or of s, a truncation.
                let other = format!("{msg}.");
                assert_eq!(fixed.verify(other.as_bytes(), sig), Invalid);
                for at in [6, sig.len() - 3] {
                    let mut bad = sig.to_vec();
                    bad[at] ^= 1 << (i % 8);
                    assert!(!aws_lc_accepts(&k, msg.as_bytes(), &bad));
                    assert_eq!(fixed.verify(msg.as_bytes(), &bad), Invalid);
                }
                assert_eq!(fixed.verify(msg.as_bytes(), &sig[..sig.len() - 1]), Invalid);
            }
        }
    }

    #[test]
    fn accepts_the_other_valid_s_and_refuses_another_keys_signatures() {
        // (r, n - s) is valid too: ECDSA does not fix the sign of s.
        let rng = SystemRandom::new();
        let k = key();
        let other = key();
        let fixed = FixedKey::new(k.public_key().as_ref()).unwrap();
        for i in 0..50u32 {
            let msg = i.to_be_bytes();
            let sig = k.sign(&rng, &msg).unwrap();
            let parsed = ecdsa::Signature::<p256::NistP256>::from_der(sig.as_ref()).unwrap();
            let (r, s) = parsed.split_bytes();
            let minus_s = N.wrapping_sub(&U256::from_be_slice(&s)).to_be_bytes();
            let twin = ecdsa::Signature::<p256::NistP256>::from_scalars(r, minus_s)
                .unwrap()
                .to_der();
            assert!(aws_lc_accepts(&k, &msg, twin.as_bytes()));
            assert_eq!(fixed.verify(&msg, twin.as_bytes()), Valid);
            let by_other = other.sign(&rng, &msg).unwrap();
            assert_eq!(fixed.verify(&msg, by_other.as_ref()), Invalid);
        }
    }

    #[test]
    fn accepts_a_signature_whose_point_has_an_x_above_n() {
        // x(u1·G + u2·Q) in [n, p) makes r = x - n (fewer than 2^-128 of signatures). Such a
        // signature is made here the other way round: a point R with x >= n, r = x - n, any s
        // and message, and the key that makes them valid, Q = r^-1·(s·R - e·G).
        use p256::elliptic_curve::ops::Reduce;
        use p256::elliptic_curve::point::DecompressPoint;
        use p256::elliptic_curve::sec1::ToSec1Point;
        use p256::{AffinePoint, FieldBytes, ProjectivePoint, Scalar};
        let (x, big_r) = (1u64..)
            .find_map(|t| {
                let x = N.wrapping_add(&U256::from_u64(t));
                let p = AffinePoint::decompress(&FieldBytes::from(x.to_be_bytes()), 0.into());
                Option::<AffinePoint>::from(p).map(|p| (t, ProjectivePoint::from(p)))
            })
            .unwrap();
        let r = Scalar::from(x);
        let s = Scalar::from(12345u64);
        let msg = b"a signature with x above n";
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, msg);
        let e =
            <Scalar as Reduce<FieldBytes>>::reduce(&FieldBytes::try_from(digest.as_ref()).unwrap());
        let q = (big_r * s - ProjectivePoint::GENERATOR * e) * r.invert().unwrap();
        let q = q.to_affine().to_sec1_point(false);
        let sig = ecdsa::Signature::<p256::NistP256>::from_scalars(r.to_bytes(), s.to_bytes())
            .unwrap()
            .to_der();
        assert!(
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, q.as_bytes())
                .verify(msg, sig.as_bytes())
                .is_ok()
        );
        let fixed = FixedKey::new(q.as_bytes()).unwrap();
        assert_eq!(fixed.verify(msg, sig.as_bytes()), Valid);
        assert_eq!(fixed.verify(b"another message", sig.as_bytes()), Invalid);
    }

    #[test]
    fn a_digest_at_or_above_n_is_taken_mod_n() {
        // A signature over a small digest e, made by hand (s = k^-1·(e + r·d)), is valid for
        // the digest e + n too: ECDSA takes the digest mod n (fewer than 2^-32 of SHA-256s).
        use p256::elliptic_curve::ops::Reduce;
        use p256::elliptic_curve::point::AffineCoordinates;
        use p256::elliptic_curve::sec1::ToSec1Point;
        use p256::{FieldBytes, ProjectivePoint, Scalar};
        let d = Scalar::from(0x5eed_u64);
        let sec1 = (ProjectivePoint::GENERATOR * d)
            .to_affine()
            .to_sec1_point(false);
        let fixed = FixedKey::new(sec1.as_bytes()).unwrap();
        for small in [0u64, 7, 123_456] {
            let e = Scalar::from(small);
            let k = Scalar::from(0xc0ffee_u64 + small);
            let r = <Scalar as Reduce<FieldBytes>>::reduce(
                &(ProjectivePoint::GENERATOR * k).to_affine().x(),
            );
            let s = k.invert().unwrap() * (e + r * d);
            let sig = ecdsa::Signature::<p256::NistP256>::from_scalars(r.to_bytes(), s.to_bytes())
                .unwrap()
                .to_der();
            let be = |x: U256| -> [u8; 32] { x.to_be_bytes().as_ref().try_into().unwrap() };
            let plain = U256::from_u64(small);
            assert_eq!(fixed.verify_digest(&be(plain), sig.as_bytes()), Valid);
            let above = be(N.wrapping_add(&plain));
            assert_eq!(
                fixed.verify_digest(&above, sig.as_bytes()),
                Valid,
                "{small} + n"
            );
            let other = be(N.wrapping_add(&plain.wrapping_add(&U256::ONE)));
            assert_eq!(fixed.verify_digest(&other, sig.as_bytes()), Invalid);
        }
    }

    #[test]
    fn leaves_it_to_the_general_verify_where_a_walk_adds_a_point_to_itself_or_its_opposite() {
        // The walk adds the key's first window, D·Q, to u1·G; with u1 = D·d that is D·Q again,
        // a sum the assembly does not define, and with u1 = -D·d its opposite. Signatures made
        // to meet each, valid and not.
        use p256::elliptic_curve::ops::Reduce;
        use p256::elliptic_curve::point::AffineCoordinates;
        use p256::elliptic_curve::sec1::ToSec1Point;
        use p256::{FieldBytes, NonZeroScalar, ProjectivePoint, Scalar};
        let scalar = random_scalar;
        let mut met = 0;
        while met < 10 {
            let d = scalar();
            let q = ProjectivePoint::GENERATOR * d;
            let sec1 = q.to_affine().to_sec1_point(false);
            let fixed = FixedKey::new(sec1.as_bytes()).unwrap();
            // An independent verifier, RustCrypto's, on the digest.
            let reference = |digest: &Scalar, sig: &[u8]| {
                let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(sec1.as_bytes()).unwrap();
                let sig = p256::ecdsa::DerSignature::try_from(sig).unwrap();
                use signature::hazmat::PrehashVerifier;
                key.verify_prehash(&digest.to_bytes(), &sig).is_ok()
            };
            let u2 = scalar();
            let (m, negative) = digits(&U256::from_be_slice(&u2.to_bytes()).to_words())[0];
            if m == 0 {
                continue;
            }
            let big_d = if negative {
                -Scalar::from(u64::from(m))
            } else {
                Scalar::from(u64::from(m))
            };
            // u1·G is D·Q itself, or its opposite (the sum is then infinity). `wrong` is the
            // multiple of Q that is not the signature's point: with equal points, the one the
            // tables computed before the guard (the review's forgery).
            let (u1, wrong) = if met % 2 == 0 {
                (big_d * d, u2 - big_d)
            } else {
                (-big_d * d, u2 + big_d)
            };
            // Valid: r = x((u1 + u2·d)·G), s = r / u2, e = u1·s.
            let big_r = (ProjectivePoint::GENERATOR * (u1 + u2 * d)).to_affine();
            let r = <Scalar as Reduce<FieldBytes>>::reduce(&big_r.x());
            let s = r * u2.invert().unwrap();
            let e = u1 * s;
            if bool::from(NonZeroScalar::new(r).is_none()) || e == Scalar::ZERO {
                continue;
            }
            let sig = ecdsa::Signature::<p256::NistP256>::from_scalars(r.to_bytes(), s.to_bytes())
                .unwrap()
                .to_der();
            let digest: [u8; 32] = e.to_bytes().into();
            assert!(reference(&e, sig.as_bytes()));
            assert_eq!(fixed.verify_digest(&digest, sig.as_bytes()), Undecided);
            // Not valid: the same u1 and u2 with another r.
            let r2 = <Scalar as Reduce<FieldBytes>>::reduce(&(q * wrong).to_affine().x());
            let s2 = r2 * u2.invert().unwrap();
            let e2 = u1 * s2;
            let bad =
                ecdsa::Signature::<p256::NistP256>::from_scalars(r2.to_bytes(), s2.to_bytes())
                    .unwrap()
                    .to_der();
            assert!(!reference(&e2, bad.as_bytes()));
            let digest2: [u8; 32] = e2.to_bytes().into();
            assert_eq!(fixed.verify_digest(&digest2, bad.as_bytes()), Undecided);
            met += 1;
        }
    }

    #[test]
    fn the_aws_lc_called_is_the_one_aws_lc_rs_links() {
        // build.rs reads the prefix of gitca's own aws-lc-sys. Should aws-lc-rs move to another
        // version, two AWS-LCs would be linked: this says so before anyone is surprised.
        let lock =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock")).unwrap();
        let versions: Vec<&str> = lock
            .split("[[package]]")
            .filter(|p| p.lines().any(|l| l == "name = \"aws-lc-sys\""))
            .filter_map(|p| p.lines().find_map(|l| l.strip_prefix("version = ")))
            .collect();
        assert_eq!(
            versions.len(),
            1,
            "aws-lc-sys versions in Cargo.lock: {versions:?}"
        );
        let version = versions[0].trim_matches('"').replace('.', "_");
        assert_eq!(env!("GITCA_AWS_LC_PREFIX"), format!("aws_lc_{version}_"));
    }

    #[test]
    fn refuses_keys_it_cannot_table() {
        let k = key();
        let point = k.public_key().as_ref().to_vec();
        assert!(FixedKey::new(&point).is_some());
        let mut compressed = point[..33].to_vec();
        compressed[0] = 2;
        assert!(FixedKey::new(&compressed).is_none());
        assert!(FixedKey::new(&[4; 10]).is_none());
        // Off the curve: y changed; (1, 1); coordinates not below p.
        let mut off = point.clone();
        off[64] ^= 1;
        assert!(FixedKey::new(&off).is_none());
        let mut ones = [0u8; 65];
        (ones[0], ones[32], ones[64]) = (4, 1, 1);
        assert!(FixedKey::new(&ones).is_none());
        let mut big = [0xffu8; 65];
        big[0] = 4;
        assert!(FixedKey::new(&big).is_none());
        // The point with x = 0 is on the curve; written with x = p, the same residue, it is not
        // a field element.
        use p256::elliptic_curve::point::DecompressPoint;
        use p256::elliptic_curve::sec1::ToSec1Point;
        let zero = p256::AffinePoint::decompress(&Default::default(), 0.into()).unwrap();
        let mut at_zero = zero.to_sec1_point(false).as_bytes().to_vec();
        assert!(FixedKey::new(&at_zero).is_some());
        at_zero[1..33].copy_from_slice(&P.to_be_bytes());
        assert!(FixedKey::new(&at_zero).is_none());
    }
}
