"""The renderer of a synthetic experiment: labels, grey images and neutron volumes on demand.

:class:`_Engine` builds the random microstructure and deformation model of one
:class:`~tomo4d.phantom.params.PhantomParams` (:mod:`tomo4d.phantom._model` and the modules it
names), the misalignment and local drift of the LQ training scan, and renders volumes whole
(values never depend on chunking), keeping the last few in a small LRU cache.  It is the only mutable object of the phantom: the
frozen :class:`~tomo4d.phantom.truth.GroundTruth` and the :class:`SyntheticExperiment` hold it
and ask it for volumes.  Rendering is described in :mod:`tomo4d.phantom.experiment`.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from ._deform import deform_inverse, make_steps
from ._microstructure import grid_points, make_fields, make_particles, material
from ._model import (
    LI_IN_ELECTROLYTE_MOL_L,
    LI_IN_LITHIATED_SI_MOL_L,
    Layout,
    Model,
    Phase,
)
from ._render import render_grey
from .params import (
    _KIND_IDS,
    AVOGADRO,
    DEFAULT_GREY,
    NEUTRON_MU_BACKGROUND,
    SIGMA_LI6_B,
    SIGMA_LI6_SCATTER_B,
    SIGMA_LI7_B,
    SIGMA_LI7_SCATTER_B,
    GridSpec,
    PhantomParams,
)


@dataclass(frozen=True)
class _DriftField:
    """Smooth random displacement (nm) of the LQ training scan relative to the HQ scan.

    Separate scans of one sample never superpose exactly after an affine registration: the sample
    relaxes, drifts and warms between them, leaving a local misregistration of about one HQ voxel.
    Modelled as a sum of ``n`` plane waves of wavelength ``length_nm`` in random directions, with
    random vector amplitudes scaled so that the RMS length of the displacement is ``rms_nm``.
    """

    wave: np.ndarray  # (n, 3) wave vectors, rad/nm
    phase: np.ndarray  # (n,)
    amp: np.ndarray  # (n, 3) nm

    @classmethod
    def make(cls, rng, *, rms_nm, length_nm, n=12):
        d = rng.normal(size=(n, 3))
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        wave = d * (2.0 * np.pi / float(length_nm)) * rng.uniform(0.8, 1.25, (n, 1))
        phase = rng.uniform(0.0, 2.0 * np.pi, n)
        amp = rng.normal(size=(n, 3))
        # mean of |sum_k a_k cos(.)|^2 over positions is sum_k |a_k|^2 / 2
        amp *= float(rms_nm) / max(np.sqrt(0.5 * (amp ** 2).sum()), 1e-12)
        return cls(wave, phase, amp)

    def __call__(self, pts):
        if not np.any(self.amp):
            return np.zeros_like(pts)
        out = np.zeros(pts.shape, np.float64)
        for k in range(len(self.phase)):
            out += np.cos(pts @ self.wave[k] + self.phase[k])[..., None] * self.amp[k]
        return out


class _Engine:
    """Renders labels and images of one experiment on demand, with a small cache."""

    def __init__(self, params: PhantomParams, cache_size: int = 8):
        self.params = p = params
        hz = p.shape[0] * p.hq_voxel_nm
        r = p.lq_voxel_nm / p.hq_voxel_nm
        hq_off = tuple(float(round(n * (r - 1) / 2.0) * p.hq_voxel_nm) for n in p.shape)
        self.layout = Layout(
            shape=p.shape, hq_voxel_nm=p.hq_voxel_nm, lq_voxel_nm=p.lq_voxel_nm,
            lq_extent_nm=tuple(float(n * p.lq_voxel_nm) for n in p.shape), hq_offset_nm=hq_off,
            z_collector_nm=hq_off[0] + 0.08 * hz, anode_thickness_nm=p.anode_thickness_nm,
            crack_width_nm=p.crack_width_nm)
        self.model = self._make_model(np.random.default_rng([p.seed, _KIND_IDS["micro"]]))
        if p.series_sample == "twin":
            self.pair_model = self._make_model(np.random.default_rng([p.seed, _KIND_IDS["twin"]]))
        else:
            self.pair_model = self.model
        self.misalign = self._make_misalignment(np.random.default_rng([p.seed, _KIND_IDS["misalign"]]))
        self.drift = _DriftField.make(np.random.default_rng([p.seed, _KIND_IDS["drift"]]),
                                      rms_nm=p.pair_drift_nm, length_nm=p.pair_drift_length_nm)
        self.rings = self._make_rings(np.random.default_rng([p.seed, _KIND_IDS["rings"]]))
        self._cache: OrderedDict = OrderedDict()
        #: voxel count of each phase of the HQ truth labels, per step rendered so far
        self.phase_counts_hq: dict[int, np.ndarray] = {}
        self._si_volumes: tuple[tuple[float, ...], tuple[float, ...]] | None = None
        self._cache_size = cache_size
        self.grids = {g: GridSpec(g, p.shape, self.layout.voxel_nm(g),
                                  tuple(float(v) for v in self.layout.grid_origin_nm(g))) for g in ("hq", "lq")}

    # -- model ------------------------------------------------------------------------------
    def _make_model(self, rng):
        p, lay = self.params, self.layout
        # particles whose centre lies this far outside the LQ field can still be imaged (in-plane
        # strain, misalignment of the LQ training scan, irregular shapes up to 2.2 x 1.5 radii)
        margin = 3.5 * p.particle_radius_nm + 0.03 * max(lay.lq_extent_nm) + p.misalignment_shift_nm
        parts = make_particles(rng, lay, si_fraction=p.si_volume_fraction, radius_nm=p.particle_radius_nm,
                                 radius_sigma=p.radius_sigma, core_shell_fraction=p.core_shell_fraction,
                                 cracked_fraction=p.cracked_fraction, margin_nm=margin)
        fields = make_fields(rng, lay, porosity=p.matrix_porosity, pore_size_nm=p.pore_size_nm,
                               fibre_fraction=p.separator_solid_fraction, fibre_radius_nm=p.fibre_radius_nm,
                               margin_nm=margin)
        steps = make_steps(parts, p.soc_schedule, expansion=p.expansion, in_plane_ratio=p.in_plane_ratio,
                             residual_fraction=p.residual_fraction, particle_swelling=p.particle_swelling)
        return Model(lay, parts, fields, steps, p.expansion_gradient)

    def _make_misalignment(self, rng):
        """4x4 affine (sample frame, nm): LQ-scan position -> sample position, about the LQ centre."""
        p = self.params
        a = np.deg2rad(p.misalignment_deg)
        angles = rng.uniform(-1, 1, 3) * np.array([a, a / 4, a / 4])

        def rot(i, j, t):
            m = np.eye(3)
            m[i, i] = m[j, j] = np.cos(t)
            m[i, j], m[j, i] = -np.sin(t), np.sin(t)
            return m

        lin = rot(1, 2, angles[0]) @ rot(0, 2, angles[1]) @ rot(0, 1, angles[2])
        lin = lin * (1.0 + rng.uniform(-1, 1) * 0.002 * min(p.misalignment_deg, 1.0))
        shift = rng.normal(size=3)
        shift *= p.misalignment_shift_nm / max(np.linalg.norm(shift), 1e-12)
        c = np.asarray(self.layout.lq_extent_nm) / 2.0
        mat = np.eye(4)
        mat[:3, :3] = lin
        mat[:3, 3] = c + shift - lin @ c
        return mat

    def _make_rings(self, rng):
        p = self.params
        n = p.shape
        yy, xx = np.meshgrid(np.arange(n[1]) - (n[1] - 1) / 2.0, np.arange(n[2]) - (n[2] - 1) / 2.0, indexing="ij")
        rr = np.hypot(yy, xx)
        out = np.zeros(n[1:], np.float32)
        if p.ring_amplitude == 0:
            return out
        k = max(4, int(rr.max() / 5))
        for r0, a in zip(rng.uniform(1.0, rr.max(), k), rng.normal(0, 1, k)):
            out += np.float32(a * p.ring_amplitude) * np.exp(-0.5 * ((rr - r0) / 0.6) ** 2).astype(np.float32)
        out += np.float32(2 * p.ring_amplitude) * np.exp(-0.5 * (rr / 1.0) ** 2).astype(np.float32)
        return out

    # -- cache --------------------------------------------------------------------------------
    def _cached(self, key, fn):
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        val = fn()
        self._cache[key] = val
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return val

    # -- labels -------------------------------------------------------------------------------
    def _reference_positions(self, model, grid, step, misaligned):
        pts = grid_points(self.layout, grid)
        if misaligned:
            m = self.misalign
            pts = pts @ m[:3, :3].T + m[:3, 3]
            pts = pts + self.drift(pts)
        return deform_inverse(model, step, pts)

    def _model_of(self, sample):
        return self.model if sample == "series" else self.pair_model

    def _labels_from(self, key, ref):
        _, grid, step, sample, misaligned = key
        out = material(self._model_of(sample), step, ref)
        if grid == "hq" and sample == "series" and not misaligned:
            self.phase_counts_hq[step] = np.bincount(out[0].ravel(), minlength=len(Phase))
        return out

    def labels(self, grid, step, *, sample="series", misaligned=False):
        """(phase uint8, particle int32) volumes of ``grid`` at ``step``: the material at the voxel centres."""
        if self.pair_model is self.model:
            sample = "series"
        key = ("labels", grid, step, sample, misaligned)
        return self._cached(key, lambda: self._labels_from(
            key, self._reference_positions(self._model_of(sample), grid, step, misaligned)))

    def volume_grey(self, grid, step, *, sample="series", misaligned=False):
        """Noise-free, unblurred grey image of ``grid`` at ``step``: the material's grey value averaged
        over each voxel (partial volume, ``supersampling**3`` sub-samples near interfaces), float32."""
        if self.pair_model is self.model:
            sample = "series"
        key = ("labels", grid, step, sample, misaligned)
        table = self.grey_table()
        k = self.params.supersampling

        def compute():
            if k == 1:
                return table[self.labels(grid, step, sample=sample, misaligned=misaligned)[0]]
            model = self._model_of(sample)
            ref = self._reference_positions(model, grid, step, misaligned)
            phase, pid = self._cached(key, lambda: self._labels_from(key, ref))
            return render_grey(model, step, ref, phase, pid, table, supersampling=k)
        return self._cached(("grey",) + key[1:], compute)

    def silicon_volumes_nm3(self):
        """(non-lithiated, lithiated) silicon volume in the HQ field per step, nm^3: voxel counts of the
        HQ truth labels (steps not rendered yet are rendered now), computed once."""
        if self._si_volumes is None:
            v3 = self.grids["hq"].voxel_size_nm ** 3
            vals, lith = [], []
            for s in range(self.params.n_steps):
                if s not in self.phase_counts_hq:
                    self.labels("hq", s)
                vals.append(float(self.phase_counts_hq[s][Phase.SILICON]) * v3)
                lith.append(float(self.phase_counts_hq[s][Phase.LITHIATED_SILICON]) * v3)
            self._si_volumes = (tuple(vals), tuple(lith))
        return self._si_volumes

    # -- images -------------------------------------------------------------------------------
    def grey_table(self):
        p = self.params
        t = np.zeros(len(Phase), np.float32)
        for ph, v in DEFAULT_GREY.items():
            t[ph] = v
        si, mx = DEFAULT_GREY[Phase.SILICON], DEFAULT_GREY[Phase.MATRIX]
        t[Phase.LITHIATED_SILICON] = si + (mx - si) * p.lithiated_contrast_loss
        return t

    def image(self, kind, step=0):
        """float32 image of ``kind`` (hq, lq, repeat, series, series_hq, repeat_hq) at ``step``.

        Volume-averaged grey values (:meth:`volume_grey`), blurred by the scanner-frame Gaussian PSF,
        optional phase-contrast fringes, rings (LQ), additive Gaussian noise.
        """
        from scipy.ndimage import gaussian_filter, gaussian_laplace

        p = self.params
        grid = "hq" if kind in ("hq", "series_hq", "repeat_hq") else "lq"
        sample = "pair" if kind in ("hq", "lq") else "series"
        img = self.volume_grey(grid, step, sample=sample, misaligned=(kind == "lq"))
        vox = self.layout.voxel_nm(grid)
        sigma = (p.hq_blur_sigma_nm if grid == "hq" else p.lq_blur_sigma_nm) / vox
        noise = p.hq_noise if grid == "hq" else p.lq_noise
        out = gaussian_filter(img, sigma, mode="nearest") if sigma > 0 else img.copy()
        if p.phase_contrast > 0:
            fr = max(sigma, 0.7)
            out -= np.float32(p.phase_contrast * fr * fr) * gaussian_laplace(img, fr, mode="nearest")
        del img
        if grid == "lq":
            out += self.rings[None]
        rng = np.random.default_rng([p.seed, _KIND_IDS[kind], step])
        out += rng.standard_normal(out.shape, dtype=np.float32) * np.float32(noise)
        return out

    def li_concentration(self, phase):
        c = np.zeros(len(Phase), np.float32)
        c[Phase.LITHIATED_SILICON] = LI_IN_LITHIATED_SI_MOL_L
        c[Phase.PORE] = LI_IN_ELECTROLYTE_MOL_L
        return c[phase]

    def neutron_mu_table(self, li6_fraction=None):
        """Attenuation (1/cm at 1.8 A) per phase including its lithium (absorption and scattering)."""
        e = self.params.li6_fraction if li6_fraction is None else li6_fraction
        sigma_li_cm2 = (e * (SIGMA_LI6_B + SIGMA_LI6_SCATTER_B) + (1 - e) * (SIGMA_LI7_B + SIGMA_LI7_SCATTER_B)) * 1e-24
        per_mol_l = AVOGADRO * 1e-3 * sigma_li_cm2  # (1/cm) per (mol/L)
        t = np.zeros(len(Phase), np.float64)
        for ph, v in NEUTRON_MU_BACKGROUND.items():
            t[ph] = v
        t[Phase.LITHIATED_SILICON] += LI_IN_LITHIATED_SI_MOL_L * per_mol_l
        t[Phase.PORE] += LI_IN_ELECTROLYTE_MOL_L * per_mol_l
        return t.astype(np.float32), float(per_mol_l)

    def neutron(self, step):
        """Neutron attenuation volume (1/cm), LQ field binned by ``neutron_bin``, blurred, noisy."""
        from scipy.ndimage import gaussian_filter

        p = self.params
        phase, _ = self.labels("lq", step)
        mu = self.neutron_mu_table()[0][phase]
        b = p.neutron_bin
        n = tuple(s // b for s in mu.shape)
        mu = mu[:n[0] * b, :n[1] * b, :n[2] * b].reshape(n[0], b, n[1], b, n[2], b).mean(axis=(1, 3, 5))
        sigma = p.neutron_blur_sigma_nm / (b * p.lq_voxel_nm)
        if sigma > 0:
            mu = gaussian_filter(mu, sigma, mode="nearest")
        rng = np.random.default_rng([p.seed, _KIND_IDS["neutron"], step])
        return (mu + rng.standard_normal(mu.shape, dtype=np.float32) * np.float32(p.neutron_noise)).astype(np.float32)

    # -- phi ------------------------------------------------------------------------------------
    def lq_to_hq_phi(self):
        """4x4 phi: HQ voxel coords (fixed) -> LQ-on-HQ-grid voxel coords (moving), about (n-1)/2."""
        lay = self.layout
        h = lay.hq_voxel_nm
        o = np.asarray(lay.hq_offset_nm)
        inv = np.linalg.inv(self.misalign)

        def moving(x):
            X = o + (x + 0.5) * h
            pscan = inv[:3, :3] @ X + inv[:3, 3]
            return (pscan - o) / h - 0.5

        c = (np.asarray(lay.shape, float) - 1.0) / 2.0
        phi = np.eye(4)
        phi[:3, :3] = inv[:3, :3]
        phi[:3, 3] = moving(c) - c
        return phi

