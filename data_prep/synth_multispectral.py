"""A synthetic multispectral demo: 10-band uint16 time series of fields, told apart by when and
how fast they green up, or only by how bright they are.

Each item is one patch inside one field, observed on irregular dates over a year by a
Sentinel-2-like sensor: a `.npy` array (T, H, W, 10) of uint16 surface reflectance x 10000
(0..10000) in the bands `BAND_NAMES`, and beside it `<item>.dates.json`, the JSON list of
its T acquisition dates in ISO form (`"2024-03-01"`), sorted. The classes (`CLASSES`):

- four crops, a mix of bare soil and green canopy whose green fraction follows a double
  logistic curve over the year (`PHENOLOGY`): `early_fast` and `early_slow` green up in
  spring, `late_fast` and `late_slow` in early summer; the fast ones within a few weeks, the
  slow ones over two to three months. Every crop has the same spectra, canopy cover and
  senescence, so the timing and the speed of the green-up are what tells them apart.
- `water`: dark in every band, NIR below red, nearly constant over the year.
- `urban_bright` and `urban_dark`: a blocky built-up texture whose reflectance follows the
  same seasonal illumination (darker in winter, longer shadows); the dark material's
  spectrum is the bright one's times `URBAN_DARK_LEVEL`, and texture and noise are
  multiplicative, so the two differ ONLY in absolute level: an item of one is, in
  distribution, a constant multiple of an item of the other, which per-item min-max
  scaling (per band) maps to the same values.

Nothing is trivial: each field draws its own timing, speed, canopy cover, soil brightness
or material level; each pixel has its own texture and noise; each date its own atmospheric
brightness; each item its own dates. Dates are `num_dates` of the year's 5-day revisits
(`REVISIT_DAYS`), one drawn per period of 365 / `num_dates` days and per item (so the gaps
vary: 5, 10, 15 days...). A date is
cloudy with a probability that is higher in winter (`cloud_probability`); a cloud covers
the whole patch or a smooth blob of it, and its pixels are `NODATA` (0) in every band (a
valid pixel is never 0: reflectances are clipped to 1..10000), so `--nodata 0` turns them
into masks.

`data_prep.synth.generate_dataset(..., kind="multispectral")` writes the items
`OUT/<class>/<class>_<index>.npy` with their dates, and the csv lists, resumably; this module
only draws and renders one item. No TensorFlow here.

    python -m data_prep synth --kind multispectral --out data/demo_multispectral/items
"""

import dataclasses
import datetime
import json

import cv2
import numpy as np

from core.atomic import atomic_write, write_text_atomically

# Sentinel-2's 10 m and 20 m bands, in wavelength order (blue .. SWIR 2).
BAND_NAMES = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
# Typical surface reflectance x 10000 per band (BAND_NAMES order): green vegetation is dark
# in the visible (chlorophyll absorbs blue and red), steps up at the red edge and is high in
# NIR; bare soil rises smoothly to SWIR; water is dark, NIR below red; concrete is flat-ish.
SPECTRA = {
    "water": (700, 600, 400, 300, 200, 180, 150, 130, 60, 40),
    "soil": (1000, 1300, 1600, 1800, 1950, 2050, 2150, 2250, 3000, 2500),
    "vegetation": (250, 550, 250, 900, 2700, 3500, 3900, 4050, 2000, 950),
    "urban": (1700, 1850, 2000, 2100, 2150, 2200, 2250, 2300, 2500, 2350),
}
URBAN_DARK_LEVEL = 0.45  # urban_dark's spectrum is urban_bright's times this
CLASSES = ("early_fast", "early_slow", "late_fast", "late_slow", "water", "urban_bright",
           "urban_dark")
NODATA = 0
MAX_REFLECTANCE = 10000
YEAR = 2024
REVISIT_DAYS = 5
DAYS_IN_YEAR = 366  # 2024 is a leap year
MAX_DATES = DAYS_IN_YEAR // REVISIT_DAYS  # revisits in one year from any start offset


@dataclasses.dataclass(frozen=True)
class Phenology:
    """A crop's class-level green-up: the middle of the green-up (day of year) and its
    logistic rate (per day; the 10-90 % rise takes 4.4 / rate days)."""

    green_up_day: float
    green_up_rate: float


PHENOLOGY = {
    "early_fast": Phenology(100.0, 0.2),
    "early_slow": Phenology(100.0, 0.04),
    "late_fast": Phenology(165.0, 0.2),
    "late_slow": Phenology(165.0, 0.04),
}
# Shared by every crop: how long after the green-up the canopy browns, and how fast.
SEASON_DAYS = 95.0
SENESCENCE_RATE = 0.09


def cloud_probability(day_of_year):
    """The chance that a date is cloudy: 45 % in midwinter, 15 % in midsummer."""
    return 0.3 + 0.15 * np.cos(2 * np.pi * (day_of_year - 15) / 365.25)


def seasonal_illumination(day_of_year):
    """Brightness of a built-up or water surface through the year (longer shadows, lower
    sun in winter): 1.1 at the summer solstice, 0.9 in midwinter."""
    return 1.0 + 0.1 * np.cos(2 * np.pi * (day_of_year - 172) / 365.25)


def green_fraction(day_of_year, green_up_day, green_up_rate, senescence_day):
    """Double logistic canopy curve in [0, 1]: up around `green_up_day`, down around
    `senescence_day` (the phenology model of Beck et al. 2006)."""
    day = np.asarray(day_of_year, np.float64)
    rise = 1.0 / (1.0 + np.exp(-green_up_rate * (day - green_up_day)))
    fall = 1.0 / (1.0 + np.exp(SENESCENCE_RATE * (day - senescence_day)))
    return rise * fall


def draw_dates(rng, num_dates):
    """`num_dates` sorted, distinct dates of YEAR on one 5-day revisit grid (random offset):
    one revisit drawn in each of `num_dates` equal periods of the year, as one acquisition
    chosen per period (so the gaps vary from 5 days to nearly two periods).

    Returns:
        A list of `datetime.date`.
    """
    offset = int(rng.integers(REVISIT_DAYS))
    slots = np.arange(offset, DAYS_IN_YEAR, REVISIT_DAYS)
    periods = np.array_split(slots, num_dates)
    chosen = [int(period[rng.integers(len(period))]) for period in periods]
    first = datetime.date(YEAR, 1, 1)
    return [first + datetime.timedelta(days=day) for day in chosen]


def _smooth_field(rng, size, cells):
    """A smooth random field (H, W) of zero mean and unit-ish spread: `cells` x `cells`
    Gaussian values interpolated bicubically."""
    height, width = size
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)


def _blocky_texture(rng, size):
    """Built-up texture: blocks of 2-4 pixels (roofs, roads, yards) at 0.6..1.4 times the
    material's level."""
    height, width = size
    block = int(rng.integers(2, 5))
    coarse = rng.uniform(0.6, 1.4, size=(-(-height // block), -(-width // block)))
    return np.kron(coarse, np.ones((block, block)))[:height, :width]


def _reflectance(rng, class_name, days, size):
    """Cloud-free reflectance x 10000, float (T, H, W, bands), before noise."""
    height, width = size
    spectra = {name: np.asarray(values, np.float64) for name, values in SPECTRA.items()}
    if class_name in PHENOLOGY:
        phenology = PHENOLOGY[class_name]
        # Per field: sowing shifts the calendar, variety and weather the speed, density the
        # cover, moisture the soil's brightness.
        green_up_day = phenology.green_up_day + rng.uniform(-10.0, 10.0)
        green_up_rate = phenology.green_up_rate * rng.uniform(0.85, 1.18)
        senescence_day = green_up_day + SEASON_DAYS + rng.uniform(-10.0, 10.0)
        cover = rng.uniform(0.7, 0.95)
        soil = spectra["soil"] * rng.uniform(0.8, 1.15)
        # Per pixel: a few days' difference in emergence across the field.
        pixel_shift = 3.0 * _smooth_field(rng, size, 3)
        fraction = cover * green_fraction(
            days[:, None, None] + pixel_shift[None], green_up_day, green_up_rate,
            senescence_day)[..., None]
        texture = 1.0 + 0.04 * _smooth_field(rng, size, 4)
        values = (1.0 - fraction) * soil + fraction * spectra["vegetation"]
        return values * texture[None, :, :, None]
    if class_name == "water":
        level = spectra["water"] * rng.uniform(0.8, 1.25)
        texture = 1.0 + 0.02 * _smooth_field(rng, size, 3)
    elif class_name in ("urban_bright", "urban_dark"):
        scale = 1.0 if class_name == "urban_bright" else URBAN_DARK_LEVEL
        level = spectra["urban"] * scale * rng.uniform(0.88, 1.12)
        texture = _blocky_texture(rng, size)
    else:
        raise ValueError(f"Expected a class among {CLASSES}. Received: class_name={class_name!r}")
    illumination = seasonal_illumination(days)
    return (illumination[:, None, None, None] * texture[None, :, :, None]
            * level[None, None, None, :] * np.ones((len(days), height, width, 1)))


def cloud_masks(rng, days, size):
    """True where a cloud hides the ground, bool (T, H, W): each date is cloudy with
    `cloud_probability`; a cloud covers the whole patch or a smooth blob of 20-90 % of it."""
    height, width = size
    masks = np.zeros((len(days), height, width), bool)
    for index, day in enumerate(days):
        if rng.uniform() >= cloud_probability(day):
            continue
        if rng.uniform() < 0.4:
            masks[index] = True
            continue
        blob = _smooth_field(rng, size, 3)
        covered = rng.uniform(0.2, 0.9)
        masks[index] = blob >= np.quantile(blob, 1.0 - covered)
    return masks


def render_item(rng, class_name, num_dates, size):
    """Draws and renders one item of `class_name`.

    Args:
        rng: `np.random.Generator`, the item's own stream.
        class_name: one of `CLASSES`.
        num_dates: int, 2..MAX_DATES.
        size: `(height, width)` in pixels.

    Returns:
        `(frames, dates)`: uint16 (num_dates, H, W, len(BAND_NAMES)), 1..10000 on clear
        pixels and NODATA on cloudy ones; a sorted list of `datetime.date`, one per frame.
    """
    dates = draw_dates(rng, num_dates)
    days = np.array([date.timetuple().tm_yday for date in dates], np.float64)
    values = _reflectance(rng, class_name, days, size)
    # Multiplicative noise keeps urban_dark an exact multiple of urban_bright in distribution:
    # per date (atmosphere), then per pixel and band (sensor, sub-pixel mixing).
    values = values * rng.lognormal(0.0, 0.03, size=(len(days), 1, 1, 1))
    values = values * rng.lognormal(0.0, 0.03, size=values.shape)
    frames = np.clip(np.rint(values), 1, MAX_REFLECTANCE).astype(np.uint16)
    frames[cloud_masks(rng, days, size)] = NODATA
    return frames, dates


def dates_path(item_path):
    """The dates sidecar of an item: `x.npy` -> `x.dates.json`."""
    item_path = str(item_path)
    return item_path[: -len(".npy")] + ".dates.json"


def write_item(path, frames, dates):
    """Writes the dates sidecar, then the `.npy` (each atomically): an item whose `.npy`
    exists is complete."""
    write_text_atomically(dates_path(path), json.dumps([d.isoformat() for d in dates]) + "\n")
    with atomic_write(path) as temporary, open(temporary, "wb") as file:
        np.save(file, frames)
