"""Rebuild the bundled sample images from real biomedical images that ship inside pip packages.

Run from the repository root::

    pip install -e '.[sample-build]'                       # pydicom, scikit-image, nibabel
    pip download --no-deps pydicom-data==1.0.0 -d /tmp/pdd  # 34 MB wheel: not a dependency, only read here
    python -m vital.data.sample.build_sample --pydicom-data /tmp/pdd/pydicom_data-1.0.0-py3-none-any.whl

It writes ``images/*.png`` and ``SOURCES.md`` next to this file and refreshes the ``source`` of every pair in
``pairs.json`` from the table below (captions, mentions and demonstrations are hand-written and left alone).
``--check`` rebuilds in memory and fails if any committed file differs; ``--out DIR`` writes the images elsewhere.

Every input is checked against a sha256 before use, so a rebuild either reproduces the committed bytes or stops with
the name of the input that changed. Pixel handling, per image, is recorded in the ``transform`` column:

* DICOM: the modality LUT (rescale slope/intercept) is applied, then the first VOI window stored in the file (the
  DICOM linear window function, PS3.3 C.11.2.1.2); files without one are windowed on the 1st-99th percentile of the
  pixels inside the field of view (pixel padding excluded). Where that gives a poor picture, a spec names another
  window and the reason, which goes into the record. MONOCHROME1 is inverted so bone is bright.
* scikit-image and nibabel: 8-bit data is kept as is; the NIfTI volume is windowed on percentiles.
* Then the image is downscaled with Lanczos filtering so its longest side is at most 256 px; images smaller than 64 px
  are enlarged by an integer factor (bicubic) instead. PNGs carry no metadata chunks.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
from PIL import Image


HERE = Path(__file__).resolve().parent
MAX_SIDE = 256
MIN_SIDE = 64
PYDICOM_DATA = "pydicom-data==1.0.0"

PYDICOM_README = (
    "pydicom is MIT-licensed; its test_files/README.txt says of the bundled test images: 'I believe there is no "
    "restriction on using any of these files in this manner.'"
)
PYDICOM_DATA_README = (
    "pydicom-data 1.0.0 is MIT-licensed (LICENSE: 'Copyright (c) 2020 Dicom in Python'); the pydicom test_files "
    "README.txt that documents these files says: 'I believe there is no restriction on using any of these files in "
    "this manner.'"
)
NEMA_WG04 = "ftp://medical.nema.org/MEDICAL/Dicom/DataSets/WG04/"


# --------------------------------------------------------------------------------------------------------------------
# Input resolution
# --------------------------------------------------------------------------------------------------------------------
class Inputs:
    """Finds and verifies the raw files; ``pydicom_data`` is a wheel, an unpacked wheel or None (use the installed)."""

    def __init__(self, pydicom_data: Path | None = None):
        self.pydicom_data = pydicom_data

    def pydicom_file(self, name: str, sha256: str) -> bytes:
        from pydicom.data import get_testdata_file

        path = Path(get_testdata_file(name, download=False) or "")
        if not path.is_file():
            raise SystemExit(f"pydicom test file {name} not found (is pydicom>=3 installed?)")
        return _verified(path.read_bytes(), sha256, f"pydicom test_files/{name}")

    def pydicom_data_file(self, name: str, sha256: str) -> bytes:
        member = f"data_store/data/{name}"
        source = self.pydicom_data
        if source is None:
            try:
                import data_store  # the module that pydicom-data installs
            except ImportError:
                raise SystemExit(
                    f"{name} comes from {PYDICOM_DATA}: run `pip download --no-deps {PYDICOM_DATA} -d DIR` and pass "
                    "--pydicom-data DIR/pydicom_data-1.0.0-py3-none-any.whl"
                ) from None
            source = Path(data_store.__file__).parent.parent
        if source.is_file():
            with zipfile.ZipFile(source) as wheel:
                data = wheel.read(member)
        else:
            data = (source / member).read_bytes()
        return _verified(data, sha256, f"{PYDICOM_DATA} {member}")

    @staticmethod
    def skimage_array(function: str, file: str, sha256: str) -> np.ndarray:
        import skimage.data

        _verified((Path(skimage.data.__file__).parent / file).read_bytes(), sha256, f"skimage/data/{file}")
        return np.ascontiguousarray(getattr(skimage.data, function)())

    @staticmethod
    def nibabel_file(name: str, sha256: str) -> Path:
        import nibabel

        path = Path(nibabel.__file__).parent / "tests" / "data" / name
        _verified(path.read_bytes(), sha256, f"nibabel tests/data/{name}")
        return path


def _verified(data: bytes, sha256: str, what: str) -> bytes:
    found = hashlib.sha256(data).hexdigest()
    if found != sha256:
        raise SystemExit(f"{what}: sha256 {found} differs from the expected {sha256}; the upstream file changed")
    return data


def _version(dist: str) -> str:
    if dist == "pydicom-data":  # read from the wheel, not installed; its files are pinned by sha256
        return PYDICOM_DATA
    return f"{dist}=={metadata.version(dist)}"


# --------------------------------------------------------------------------------------------------------------------
# Pixel handling
# --------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Window:
    """A display window chosen here instead of the file's, with the reason (recorded in SOURCES.md)."""

    center: float
    width: float
    reason: str


@dataclass(frozen=True)
class Percentile:
    """Use the percentile window even though the file stores one, with the reason."""

    reason: str


def _first(value):
    try:
        return float(value[0])
    except TypeError:
        return float(value)


def dicom_to_uint8(data: bytes, *, window: Window | Percentile | None = None) -> tuple[np.ndarray, str]:
    """Decode one DICOM image to 8 bits; returns the array and a description of what was done.

    ``window`` None uses the file's first VOI window, else percentiles; a `Window` or a `Percentile` overrides that
    (each override carries its reason, which goes into the transformation record).
    """
    import pydicom
    from pydicom.pixels import apply_modality_lut

    ds = pydicom.dcmread(io.BytesIO(data))
    pixels = ds.pixel_array
    photometric = ds.PhotometricInterpretation
    if ds.SamplesPerPixel == 3:
        if pixels.dtype != np.uint8:
            raise ValueError("only 8-bit colour DICOM is handled")
        return pixels, f"{photometric} decoded to RGB by pydicom"
    values = apply_modality_lut(pixels, ds).astype(np.float64)
    steps = []
    if "RescaleSlope" in ds:
        steps.append(f"rescale slope {float(ds.RescaleSlope):g}, intercept {float(ds.RescaleIntercept):g}")
    padding = ds.get("PixelPaddingValue")
    inside = pixels != padding if padding is not None else np.ones(pixels.shape, bool)
    stored = "WindowCenter" in ds and "WindowWidth" in ds
    if isinstance(window, Window):
        scaled = _linear_window(values, window.center, window.width)
        steps.append(f"window C {window.center:g} / W {window.width:g} ({window.reason})")
    elif stored and window is None:
        center, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
        scaled = _linear_window(values, center, width)
        steps.append(f"DICOM window C {center:g} / W {width:g}")
    else:
        scaled, text = _percentile_window(values, inside)
        steps.append(text if window is None else f"{text} ({window.reason})")
    if photometric == "MONOCHROME1":
        scaled = 1 - scaled
        steps.append("MONOCHROME1 inverted")
    scaled[~inside] = 0
    return np.round(scaled * 255).astype(np.uint8), "; ".join(steps)


def _linear_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """The DICOM linear VOI function (PS3.3 C.11.2.1.2.1), scaled to [0, 1]."""
    return np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0, 1)


def _percentile_window(
    values: np.ndarray, inside: np.ndarray, low: float = 1, high: float = 99
) -> tuple[np.ndarray, str]:
    lo, hi = np.percentile(values[inside], [low, high])
    scaled = np.clip((values - lo) / max(hi - lo, 1e-6), 0, 1)
    return scaled, f"percentile window p{low:g}-p{high:g} ({lo:g} to {hi:g})"


def fit(image: Image.Image) -> tuple[Image.Image, str]:
    """Downscale so the longest side is at most MAX_SIDE, or enlarge tiny images by an integer factor."""
    w, h = image.size
    longest = max(w, h)
    if longest > MAX_SIDE:
        scale = MAX_SIDE / longest
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        return image.resize(size, Image.Resampling.LANCZOS), f"Lanczos downscale {w}x{h} -> {size[0]}x{size[1]}"
    if longest < MIN_SIDE:
        factor = MAX_SIDE // 2 // longest
        size = (w * factor, h * factor)
        resized = image.resize(size, Image.Resampling.BICUBIC)
        return resized, f"bicubic upscale x{factor} {w}x{h} -> {size[0]}x{size[1]}"
    return image, f"kept at {w}x{h}"


# --------------------------------------------------------------------------------------------------------------------
# The images
# --------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Spec:
    file: str
    modality: str
    package: str  # distribution name, for the version
    path: str  # file or function inside the package
    upstream: str
    url: str
    license: str
    citation: str
    make: Callable[[Inputs], tuple[np.ndarray, str]]  # -> 8-bit pixels, description of the steps before fitting


def _dicom(name, sha, *, store=False, flip_rows=False, flip_cols=False, window=None):
    def make(inputs: Inputs):
        data = inputs.pydicom_data_file(name, sha) if store else inputs.pydicom_file(name, sha)
        pixels, text = dicom_to_uint8(data, window=window)
        if flip_rows:
            pixels = pixels[::-1]
            text += "; rows flipped so anterior is at the top (Image Orientation (Patient) column direction is -y)"
        if flip_cols:
            pixels = pixels[:, ::-1]
            text += (
                "; columns flipped so the patient's right is on the viewer's left (Patient Orientation R\\F; the "
                "lead 'R' marker then reads the right way round)"
            )
        return np.ascontiguousarray(pixels), text

    return make


def _skimage(function: str, file: str, sha: str, crop=None):
    def make(inputs: Inputs):
        pixels = inputs.skimage_array(function, file, sha)
        text = f"skimage.data.{function}() {pixels.shape[1]}x{pixels.shape[0]} {'RGB' if pixels.ndim == 3 else 'grey'}"
        if crop is not None:
            (r0, r1), (c0, c1) = crop
            pixels = pixels[r0:r1, c0:c1]
            text += f"; cropped to rows {r0}:{r1}, columns {c0}:{c1}"
        return np.ascontiguousarray(pixels), text

    return make


def _nifti_slice(name: str, sha: str, plane: str, index: int):
    def make(inputs: Inputs):
        import nibabel

        image = nibabel.load(inputs.nibabel_file(name, sha))
        if nibabel.aff2axcodes(image.affine) != ("L", "A", "S"):
            raise ValueError(f"{name}: expected LAS voxel axes")
        volume = np.asarray(image.dataobj, dtype=np.float64)
        if plane == "axial":  # rows: anterior at top; columns: voxel axis 0 runs to the patient's left (radiological)
            section = volume[:, :, index].T[::-1]
        elif plane == "sagittal":  # rows: superior at top; columns: anterior on the left
            section = volume[index, :, :].T[::-1, ::-1]
        else:
            raise ValueError(plane)
        scaled, text = _percentile_window(section, np.ones(section.shape, bool))
        pixels = np.round(scaled * 255).astype(np.uint8)
        return pixels, f"{plane} slice {index} of the {volume.shape} volume; {text}"

    return make


def _pydicom_spec(file, modality, name, sha, upstream, url, citation, license=PYDICOM_README, **kw) -> Spec:
    return Spec(
        file,
        modality,
        "pydicom",
        f"pydicom/data/test_files/{name}",
        upstream,
        url,
        license,
        citation,
        _dicom(name, sha, **kw),
    )


def _store_spec(file, modality, name, sha, upstream, url, citation, **kw) -> Spec:
    return Spec(
        file,
        modality,
        "pydicom-data",
        f"data_store/data/{name}",
        upstream,
        url,
        PYDICOM_DATA_README,
        citation,
        _dicom(name, sha, store=True, **kw),
    )


GDCM_LICENSE = (
    PYDICOM_README + " The README adds that datasets from GDCM are used under GDCM's BSD-style licence "
    "(Copyright (c) 2006-2016 Mathieu Malaterre; Copyright (c) 1993-2005 CREATIS)."
)
SKIMAGE = "skimage.data"
NIBABEL_LICENSE = (
    "nibabel is MIT-licensed; its COPYING says 'The nibabel package, including all examples, code snippets and "
    "attached documentation is covered by the MIT license' and lists no third-party terms for this file."
)

SPECS: tuple[Spec, ...] = (
    # ---- chest_xray
    _store_spec(
        "cxr-chest-pa-wg04-rg1.png",
        "chest_xray",
        "RG1_UNCI.dcm",
        "3561020824868615a93a51078671b3ff73bb2578c966f76def99b4d982897e75",
        "NEMA DICOM WG04 compression test set, image RG1 (CR, THORAX, PA); pydicom test_files/README.txt: "
        "'RG1_*.dcm ... From ftp://medical.nema.org/MEDICAL/Dicom/DataSets/WG04'",
        NEMA_WG04,
        "NEMA DICOM Working Group 04 compression sample images, RG1_UNCI (via pydicom-data 1.0.0)",
        window=Percentile(
            "the stored window C 15000 / W 30000 spans the whole 15-bit range and shows little contrast"
        ),
    ),
    # ---- ct
    _pydicom_spec(
        "ct-thorax-vertebra-axial.png",
        "ct",
        "CT_small.dcm",
        "3dd31e5cc835b3f2cdd46c9da1982f59251e78518fefa8163d914631c66437d6",
        "NEMA DICOM WG04 image CT1_UNC, downsized to 128x128 by pydicom (test_files/README.txt)",
        NEMA_WG04,
        "NEMA DICOM Working Group 04 compression sample images, CT1_UNC (pydicom test file CT_small.dcm)",
    ),
    _pydicom_spec(
        "ct-head-skull-base-axial.png",
        "ct",
        "J2K_pixelrep_mismatch.dcm",
        "2df92c523d36639e4d88f892f47e4f6616c48ab017a445a6241ffe38b2d07bbf",
        "Dataset attached to pydicom issue #1149 (test_files/README.txt); original source not stated",
        "https://github.com/pydicom/pydicom/issues/1149",
        "pydicom test file J2K_pixelrep_mismatch.dcm (issue #1149)",
    ),
    _store_spec(
        "ct-abdomen-pancreas-axial.png",
        "ct",
        "explicit_VR-UN.dcm",
        "28c4a61022d7dbebec97e2f1bbdad0ed097bee2c62727c26a3f3720248c9c6e7",
        "The Cancer Imaging Archive; pydicom test_files/README.txt: 'original image taken from "
        "https://www.cancerimagingarchive.net, (freely available de-identified datasets)', recompressed with gdcmconv "
        "(study description 'Pancreas', institution 'NIH' in the header)",
        "https://www.cancerimagingarchive.net",
        "pydicom test file explicit_VR-UN.dcm (pydicom issue #968), from TCIA",
        flip_rows=True,
        window=Window(40, 400, "no window stored in the file; a standard abdominal soft-tissue window"),
    ),
    # ---- mri
    _pydicom_spec(
        "mr-abdomen-liver-t1-fs-axial.png",
        "mri",
        "examples_overlay.dcm",
        "112539bc17c0e281987397e827dff9e99890109866d570f08761f83b8f55c277",
        "GDCM test image MR-SIEMENS-DICOM-WithOverlays.dcm with cropped pixel data (test_files/README.txt)",
        "https://github.com/malaterre/GDCM",
        "GDCM test data MR-SIEMENS-DICOM-WithOverlays.dcm (pydicom examples_overlay)",
        license=GDCM_LICENSE,
    ),
    _store_spec(
        "mr-shoulder-t1-coronal-oblique.png",
        "mri",
        "MR2_UNCI.dcm",
        "7f79ac33e1ab32e1a8ca10ce62f18e5a2372e78c8a6684af17302b1a0171fc46",
        "NEMA DICOM WG04 compression test set, image MR2 (MR, SHOULDER, T1W/SE); pydicom test_files/README.txt: "
        "'MR2_*.dcm ... From ftp://medical.nema.org/MEDICAL/Dicom/DataSets/WG04'",
        NEMA_WG04,
        "NEMA DICOM Working Group 04 compression sample images, MR2_UNCI (via pydicom-data 1.0.0)",
    ),
    Spec(
        "mr-brain-t1-axial.png",
        "mri",
        "nibabel",
        "nibabel/tests/data/anatomical.nii",
        "nibabel test volume anatomical.nii (header: 'spm - 3D normalized', 2 mm voxels); origin not documented",
        "https://github.com/nipy/nibabel",
        NIBABEL_LICENSE,
        "nibabel test data anatomical.nii",
        _nifti_slice(
            "anatomical.nii", "1c089f37b6597a38bb4157a1e1b3f7f13f1bc9d4e7a8cfdfaf91d85cd8f66594", "axial", 12
        ),
    ),
    # ---- histology
    Spec(
        "histology-ihc-colon-fhl2.png",
        "histology",
        "scikit-image",
        "skimage.data.immunohistochemistry() (skimage/data/ihc.png)",
        "Center for Microscopy And Molecular Imaging (CMMI); docstring: colonic glands, FHL2 IHC with DAB and "
        "hematoxylin counterstain",
        "https://scikit-image.org/docs/stable/api/skimage.data.html",
        "skimage.data.immunohistochemistry docstring: 'No known copyright restrictions.' (scikit-image: BSD-3-Clause)",
        "scikit-image sample data, immunohistochemistry (CMMI)",
        _skimage(
            "immunohistochemistry", "ihc.png", "f8dd1aa387ddd1f49d8ad13b50921b237df8e9b262606d258770687b0ef93cef"
        ),
    ),
    Spec(
        "histology-ihc-colon-gland-detail.png",
        "histology",
        "scikit-image",
        "skimage.data.immunohistochemistry() (skimage/data/ihc.png)",
        "Center for Microscopy And Molecular Imaging (CMMI); docstring: colonic glands, FHL2 IHC with DAB and "
        "hematoxylin counterstain",
        "https://scikit-image.org/docs/stable/api/skimage.data.html",
        "skimage.data.immunohistochemistry docstring: 'No known copyright restrictions.' (scikit-image: BSD-3-Clause)",
        "scikit-image sample data, immunohistochemistry (CMMI)",
        _skimage(
            "immunohistochemistry",
            "ihc.png",
            "f8dd1aa387ddd1f49d8ad13b50921b237df8e9b262606d258770687b0ef93cef",
            crop=((290, 470), (235, 415)),
        ),
    ),
    # ---- other
    Spec(
        "fundus-normal-left-eye.png",
        "other",
        "scikit-image",
        "skimage.data.retina() (skimage/data/retina.jpg)",
        "Wikimedia Commons, File:Fundus_photograph_of_normal_left_eye.jpg (Mikael Häggström)",
        "https://commons.wikimedia.org/wiki/File:Fundus_photograph_of_normal_left_eye.jpg",
        "skimage.data.retina docstring: 'made available under the Creative Commons CC0 1.0 Universal Public Domain "
        "Dedication'",
        "Häggström M. Medical gallery of Mikael Häggström 2014. WikiJournal of Medicine 1(2). "
        "doi:10.15347/wjm/2014.008",
        _skimage("retina", "retina.jpg", "38a07f36f27f095e818aea7b96d34202c05176d30253c66733f2e00379e9e0e6"),
    ),
    Spec(
        "fundus-microaneurysms-green.png",
        "other",
        "scikit-image",
        "skimage.data.microaneurysms() (skimage/data/microaneurysms.png)",
        "High-Resolution Fundus (HRF) Image Database, crop of image 07_dr.JPG (green channel)",
        "https://www5.cs.fau.de/research/data/fundus-images/",
        "skimage.data.microaneurysms docstring: 'No copyright restrictions. CC0 given by owner (Andreas Maier).'",
        "Budai A, Bock R, Maier A, Hornegger J, Michelson G. Robust vessel segmentation in fundus images. Int J "
        "Biomed Imaging 2013. doi:10.1155/2013/154860",
        _skimage(
            "microaneurysms", "microaneurysms.png", "a1e1be59aa447f8ce082f7fa809997ab369a2b137cb6c4202abc647c7ccf6456"
        ),
    ),
    _pydicom_spec(
        "us-lymph-node-power-doppler.png",
        "other",
        "examples_jpeg2k.dcm",
        "2427fdc82d90cd4ce8a69b5157eecb37549902dce138ac15c6456a7eae70b83d",
        "NEMA DICOM WG04 compression test set, image US1 (test_files/README.txt: 'examples_jpeg2k.dcm: identical to "
        "US1_J2KR.dcm')",
        NEMA_WG04,
        "NEMA DICOM Working Group 04 compression sample images, US1_J2KR (pydicom test file examples_jpeg2k.dcm)",
    ),
    _store_spec(
        "xr-right-distal-leg-ap.png",
        "other",
        "RG3_UNCI.dcm",
        "9ef0260919de89774da90336ad16c03a5be899a8bb663bbaea52b6d0769bec78",
        "NEMA DICOM WG04 compression test set, image RG3 (CR, EXTREMITY, AP; study description 'Non-ossifying "
        "fibroma of distal tibia'); pydicom test_files/README.txt: 'RG3_*.dcm ... From "
        "ftp://medical.nema.org/MEDICAL/Dicom/DataSets/WG04'",
        NEMA_WG04,
        "NEMA DICOM Working Group 04 compression sample images, RG3_UNCI (via pydicom-data 1.0.0)",
        flip_cols=True,
    ),
    _pydicom_spec(
        "nm-bone-scan-whole-body.png",
        "other",
        "JPEG2000.dcm",
        "5be539024e6803029a7b73c0f8e72e88d032e3a0bc05922c0c047344780aa8e1",
        "NEMA DICOM WG04 compression test set, image NM1 (test_files/README.txt: 'Edited NM1_J2KI'; study "
        "description 'Whole Body Bone')",
        NEMA_WG04,
        "NEMA DICOM Working Group 04 compression sample images, NM1_J2KI (pydicom test file JPEG2000.dcm)",
    ),
    Spec(
        "qpi-cell-in-saline.png",
        "other",
        "scikit-image",
        "skimage.data.cell() (skimage/data/cell.png)",
        "Quantitative phase image from a digital hologram (Müller et al. 2018), per the skimage.data.cell docstring",
        "https://doi.org/10.1364/OE.26.010729",
        "skimage.data.cell docstring: 'This image is CC0, dedicated to the public domain.'",
        "Müller P, Schürmann M, Girardo S, Cojoc G, Guck J. Accurate evaluation of size and refractive index for "
        "spherical objects in quantitative phase imaging. Optics Express 26(8):10729-10743 (2018)",
        _skimage("cell", "cell.png", "8d23a7fb81f7cc877cd09f330357fc7f595651306e84e17252f6e0a1b3f61515"),
    ),
)


# --------------------------------------------------------------------------------------------------------------------
# Build
# --------------------------------------------------------------------------------------------------------------------
def render(spec: Spec, inputs: Inputs) -> tuple[bytes, str]:
    pixels, steps = spec.make(inputs)
    image = Image.fromarray(pixels, mode="RGB" if pixels.ndim == 3 else "L")
    image, fitted = fit(image)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue(), f"{steps}; {fitted}; 8-bit {image.mode} PNG"


def origin(spec: Spec) -> str:
    return f"{_version(spec.package)}: {spec.path}"


def sources_markdown(rows: list[tuple[Spec, str]]) -> str:
    lines = [
        "# Sources of the bundled sample data",
        "",
        "Generated by `python -m vital.data.sample.build_sample`; do not edit by hand.",
        "",
        "**The images are real biomedical images taken from files that ship inside pip packages.** The captions, the",
        "in-text mentions (`pairs.json`) and the demonstration conversations (`demos.json`) were written for this",
        "project by the biomed-vital maintainers to match what each image shows. They are not taken from PubMed",
        "Central, carry no PMID, and have not been reviewed by clinicians: use them as test and tutorial data only,",
        "never for clinical purposes.",
        "",
        "| file | modality | origin (package and file) | upstream source | licence as stated by the package | "
        "transformation |",
        "|---|---|---|---|---|---|",
    ]
    for spec, transform in rows:
        cells = [f"`{spec.file}`", spec.modality, f"`{origin(spec)}`", f"{spec.upstream} ({spec.url})", spec.license]
        cells.append(transform)
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines.append("")
    return "\n".join(lines)


def source_record(spec: Spec) -> dict[str, str]:
    return {
        "origin": origin(spec),
        "pmid": "",
        "url": spec.url,
        "license": spec.license,
        "citation": spec.citation,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--pydicom-data", type=Path, help=f"{PYDICOM_DATA} wheel or unpacked wheel")
    parser.add_argument("--out", type=Path, default=HERE, help="folder for images/ and SOURCES.md (default: here)")
    parser.add_argument("--check", action="store_true", help="rebuild in memory; exit 1 if a committed file differs")
    parser.add_argument("--only", nargs="*", help="build only these image files (with --out, for previews)")
    args = parser.parse_args(argv)

    inputs = Inputs(args.pydicom_data)
    specs = [s for s in SPECS if not args.only or s.file in args.only]
    rows, outputs = [], {}
    for spec in specs:
        png, transform = render(spec, inputs)
        rows.append((spec, transform))
        outputs[f"images/{spec.file}"] = png
        print(f"{spec.file:40s} {spec.modality:10s} {len(png):7d} B  {transform}")
    outputs["SOURCES.md"] = sources_markdown(rows).encode()

    pairs_path = HERE / "pairs.json"
    if pairs_path.exists() and not args.only:
        by_file = {s.file: s for s in SPECS}
        pairs = json.loads(pairs_path.read_text())
        for pair in pairs:
            if pair["image"] not in by_file:
                raise SystemExit(f"pairs.json: pair {pair['id']} names an unknown image {pair['image']}")
            pair["source"] = source_record(by_file[pair["image"]])
        outputs["pairs.json"] = (json.dumps(pairs, indent=2, ensure_ascii=False) + "\n").encode()

    if args.check:
        stale = [name for name, data in outputs.items() if _read(HERE / name) != data]
        extra = sorted({p.name for p in (HERE / "images").glob("*.png")} - {s.file for s in SPECS})
        for name in stale:
            print(f"differs: {name}", file=sys.stderr)
        for name in extra:
            print(f"not built by this script: images/{name}", file=sys.stderr)
        return 1 if stale or extra else 0

    (args.out / "images").mkdir(parents=True, exist_ok=True)
    for name, data in outputs.items():
        if name == "pairs.json" and args.out != HERE:
            continue
        (args.out / name).write_bytes(data)
    total = sum(len(v) for k, v in outputs.items() if k.startswith("images/"))
    print(f"{len(specs)} images, {total / 1024:.0f} KiB")
    return 0


def _read(path: Path) -> bytes | None:
    return path.read_bytes() if path.exists() else None


if __name__ == "__main__":
    raise SystemExit(main())
