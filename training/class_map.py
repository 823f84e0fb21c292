"""A class map: a trained run's classes over a whole raster, written as a GeoTIFF.

A run trained on patches of a labelled raster (`layout: raster`, data_prep/raster_patches.py)
classifies patches; `predict_class_map` slides the run's patch over a whole time-series
raster (the one trained on, or another tile of the same sensor), `stride` pixels apart
(default: the run's `patch_stride`), with a last row and column of patches flush with the
raster's edges so that every pixel is reached. Each patch is read as the preparation stored
it (the run's dates, bands, `bands_per_date`, `max_frames`, `to_uint8` rule), cut into the
run's evaluation clips (its frame sampling, centre crop), and scored in batches; the
probabilities are averaged over its clips.

Each patch speaks for the pixels nearest its centre: its cell is the `stride`-wide square
around the centre (cells of neighbouring patches meet half-way between their centres, the
edge patches' cells reach the edges), clipped to the patch itself, so a stride larger than
the patch leaves the pixels between patches uncovered. The map holds, per pixel, the label
value of the chosen class (the value the label raster uses for it, as the manifest's
`source.patches.class_values` records; class ids for other runs) and optionally the
confidence in percent; pixels no patch covered, and patches whose every input value is
invalid (the run's nodata value, NaN), are nodata. `write_class_map` writes it with the
input raster's CRS and transform, so it overlays the input in any GIS.

`predict.py --run-dir RUN --class-map OUT.tif RASTER` is the command (docs/DATA.md,
"Labelled rasters").
"""

import dataclasses
import os

import numpy as np

from core.errors import UserError
from data_prep.raster_patches import date_files, grid_origins, time_series_grid
from data_prep.rasters import RasterReadError, read_raster, read_stack_frames, write_raster
from data_prep.sampling import sample_frame_indices
from data_prep.sequence_records import select_item_frames, to_uint8
from training.views import center_crop_numpy

# Output dtypes by the largest value they must hold; nodata is the type's last value
# (int32: its first), never a class value.
_MAP_DTYPES = (("uint8", 255), ("uint16", 65535), ("int32", np.iinfo(np.int32).min))


@dataclasses.dataclass
class ClassMap:
    """A class map and what it needs to be written and read.

    Attributes:
        values: (H, W) array of class values, `nodata` where no patch spoke.
        confidence: (H, W) array, same dtype: the chosen class's probability in percent
            (0-100), `nodata` likewise.
        nodata: int.
        class_names: list of str, index = class id.
        class_values: list of ints, the value written for each class id.
        patches: int, patches scored.
    """

    values: np.ndarray
    confidence: np.ndarray
    nodata: int
    class_names: list
    class_values: list
    patches: int

    def pixels_per_class(self):
        """{class name: pixels of that class}, in class order."""
        return {name: int(np.count_nonzero(self.values == value))
                for name, value in zip(self.class_names, self.class_values)}


def patch_cells(origins, patch_size, length):
    """The `[start, stop)` pixels each patch speaks for along one axis.

    Neighbouring cells meet half-way between the patch centres; the first starts at 0, the
    last stops at `length`; each is clipped to its patch.

    >>> patch_cells([0, 4, 6], 4, 10)
    [(0, 4), (4, 7), (7, 10)]
    """
    bounds = [0] + [(before + after + patch_size) // 2
                    for before, after in zip(origins, origins[1:])] + [length]
    return [(max(start, origin), min(stop, origin + patch_size))
            for origin, start, stop in zip(origins, bounds, bounds[1:])]


def map_dtype(class_values):
    """(numpy dtype name, nodata) of a map holding `class_values` (and percentages)."""
    low, high = min(class_values), max(max(class_values), 100)
    for name, nodata in _MAP_DTYPES:
        info = np.iinfo(name)
        if info.min <= low and high <= info.max and nodata not in class_values:
            return name, nodata
    raise UserError(f"Expected class values that fit a 32-bit integer map. "
                    f"Received: {min(class_values)}..{max(class_values)}")


class _PatchReader:
    """Reads windows of a time-series raster as the run's preparation stored them: the
    dates it kept, then only those of the run's evaluation clips. A pixel is invalid where
    the validity band is 0, or a band holds the nodata value or NaN."""

    def __init__(self, raster_path, manifest):
        source = manifest.get("source", {})
        self.path = raster_path
        self.bands = source.get("bands")
        self.bands_per_date = source.get("bands_per_date")
        self.validity_band = source.get("validity_band")
        self.to_uint8 = manifest.get("to_uint8")
        self.nodata = manifest.get("nodata", source.get("nodata"))
        self.dates = date_files(raster_path) if os.path.isdir(raster_path) else None
        self.grid = time_series_grid(raster_path)
        if self.dates is not None:
            total = len(self.dates)
        elif self.bands_per_date:
            if self.grid.count % self.bands_per_date:
                raise UserError(f"Expected {raster_path} to hold whole dates of "
                                f"{self.bands_per_date} bands (the run's bands_per_date). "
                                f"Received: {self.grid.count} bands")
            total = self.grid.count // self.bands_per_date
        else:
            total = 1
        kept, _ = select_item_frames(total, max_frames=manifest.get("max_frames"))
        sampling = manifest["sampling"]
        clips = sample_frame_indices(len(kept), sampling["frames"], method=sampling["method"],
                                     stride=sampling["frame_stride"],
                                     num_clips=int(manifest["clips_per_video"]))
        # Read each needed date once; `self.clips` indexes the dates read.
        self.read_dates, self.clips = np.unique(kept[clips], return_inverse=True)
        self.clips = self.clips.reshape(clips.shape)
        self.mean = (manifest.get("statistics") or {}).get("mean")

    def _band_list(self):
        """The bands of a date to read: `bands` (else all but the validity band), then the
        validity band when there is one."""
        if self.validity_band is None:
            return self.bands
        per_date = self.bands_per_date or self.grid.count
        kept = self.bands if self.bands is not None else \
            [band for band in range(per_date) if band != self.validity_band]
        return list(kept) + [self.validity_band]

    def read(self, window):
        """(C, F, h, w, B) clips of `window` `(row, col, height, width)` and an (h, w)
        bool of pixels valid in some frame."""
        bands = self._band_list()
        try:
            if self.dates is not None:
                frames = np.stack([read_raster(self.dates[date], bands, window)
                                   for date in self.read_dates])
            elif self.bands_per_date:
                frames = read_stack_frames(self.path, self.read_dates, self.bands_per_date,
                                           bands, window)
            else:
                frames = read_raster(self.path, bands, window)[None]
        except RasterReadError as error:
            raise UserError(f"Cannot read the raster {self.path}: {error}. "
                            f"Received: window={window}") from None
        invalid = np.zeros(frames.shape[:-1], bool)
        if self.validity_band is not None:  # nonzero = valid, GDAL's convention
            invalid |= frames[..., -1] == 0
            frames = frames[..., :-1]
        if np.issubdtype(frames.dtype, np.floating):
            invalid |= np.isnan(frames).any(axis=-1)
        if self.nodata is not None:
            invalid |= (frames == self.nodata).any(axis=-1)
        if self.to_uint8:  # prepare's own rule
            frames = to_uint8(frames, self.to_uint8["low"], self.to_uint8["high"])
        if self.mean is not None and invalid.any():
            # As training sees them: invalid pixels hold the band's dataset mean.
            frames = np.where(invalid[..., None], np.asarray(self.mean).astype(frames.dtype),
                              frames)
        return frames[self.clips], ~invalid.all(axis=0)


def _batched(values, size):
    for start in range(0, len(values), size):
        yield values[start:start + size]


def _as_input_dtype(clips, input_dtype, raster_path):
    """The clips in the model's input dtype; a cast that could change values is refused."""
    if input_dtype is None or clips.dtype == np.dtype(input_dtype):
        return clips
    if not np.can_cast(clips.dtype, input_dtype, "safe"):
        raise UserError(f"Expected {raster_path} to read as the run's {input_dtype} input. "
                        f"Received: {clips.dtype} values")
    return clips.astype(input_dtype)


def predict_class_map(trained, raster_path, probabilities_of, *, stride=None, batch_size=32,
                      input_dtype=None):
    """The class map of a whole raster.

    Args:
        trained: `training.run_dir.TrainedRun` of a run trained on raster patches.
        raster_path: str, a time-series raster like the one trained on (a stack with the
            run's bands per date, or a folder of per-date GeoTIFFs).
        probabilities_of: callable (clips (N, F, crop, crop, B)) -> (N, classes)
            probabilities (`training.scoring.clip_probabilities_function`).
        stride: int or None, pixels between patches; None = the run's `patch_stride` (its
            `patch_size` when that is unset).
        batch_size: int, clips scored at once.
        input_dtype: None or the model's input dtype (`model.inputs[0].dtype`): the clips
            are cast to it when no value changes, else refused.

    Returns:
        `ClassMap`.

    Raises:
        UserError: a run not trained on raster patches, a multi-label run, a raster that
            does not read, is smaller than a patch or has another band count.
    """
    manifest = trained.manifest
    source = manifest.get("source", {})
    if source.get("layout") != "raster" or manifest.get("multi_label"):
        raise UserError(f"Expected a single-label run trained on raster patches (layout "
                        f"raster) for a class map. Received: --run-dir {trained.run_dir.path} "
                        f"(layout {source.get('layout')!r}"
                        + (", multi-label)" if manifest.get("multi_label") else ")"))
    patch_size = int(source["patch_size"])
    stride = stride or source.get("patch_stride") or patch_size
    if stride < 1:
        raise UserError(f"Expected a stride >= 1 pixel. Received: stride={stride}")
    if not os.path.exists(raster_path):
        raise UserError(f"Expected a raster to map. Received: {raster_path} does not exist")
    reader = _PatchReader(raster_path, manifest)
    height, width = reader.grid.height, reader.grid.width
    rows = grid_origins(height, patch_size, stride, cover_edge=True)
    cols = grid_origins(width, patch_size, stride, cover_edge=True)
    if not rows or not cols:
        raise UserError(f"Expected a raster of at least one patch ({patch_size}x{patch_size} "
                        f"pixels). Received: {raster_path} is {height}x{width}")
    frames, crop_size, _, bands = trained.input_shape
    size = (manifest.get("resize") or {}).get("size") or patch_size
    if size != patch_size:
        raise UserError(f"Expected a run whose prepared size equals its patch size "
                        f"({patch_size}): class maps do not resize patches. Received: "
                        f"size={size}")
    class_values = source.get("patches", {}).get("class_values") \
        or list(range(len(trained.class_names)))
    dtype, nodata = map_dtype(class_values)
    values = np.full((height, width), nodata, dtype)
    confidence = np.full((height, width), nodata, dtype)
    lookup = np.asarray(class_values)
    row_cells = patch_cells(rows, patch_size, height)
    col_cells = patch_cells(cols, patch_size, width)
    scored = 0
    for row, (top, bottom) in zip(rows, row_cells):
        # One strip of patch rows is read at once; its patches are cut from it.
        strip, valid = reader.read((row, 0, patch_size, width))
        if strip.shape[-1] != bands:
            raise UserError(f"Expected {bands} band(s) per date, as the run's model takes "
                            f"(class maps add no mask or day-of-year band). Received: "
                            f"{strip.shape[-1]} in {raster_path}")
        chosen = [index for index, col in enumerate(cols)
                  if valid[:, col:col + patch_size].any()]
        if not chosen:
            continue
        clips = np.stack([strip[:, :, :, cols[index]:cols[index] + patch_size]
                          for index in chosen])
        # (patches, C, F, P, P, B) -> (patches * C, F, crop, crop, B), patch-major.
        num_clips = clips.shape[1]
        clips = center_crop_numpy(clips, crop_size).reshape(
            (-1, frames, crop_size, crop_size, bands))
        clips = _as_input_dtype(clips, input_dtype, raster_path)
        probabilities = np.concatenate([np.asarray(probabilities_of(batch))
                                        for batch in _batched(clips, batch_size)])
        probabilities = probabilities.reshape(len(chosen), num_clips, -1).mean(axis=1)
        best = probabilities.argmax(axis=1)
        percent = np.rint(100 * probabilities.max(axis=1))
        for index, label, score in zip(chosen, best, percent):
            left, right = col_cells[index]
            values[top:bottom, left:right] = lookup[label]
            confidence[top:bottom, left:right] = score
        scored += len(chosen)
    return ClassMap(values, confidence, nodata, list(trained.class_names),
                    [int(value) for value in class_values], scored)


def write_class_map(path, class_map, raster_path, *, with_confidence=False):
    """Writes `class_map` as a GeoTIFF with the georeference of `raster_path`.

    Band 1 `class`: class values; band 2 `confidence_percent` with `with_confidence`. Both
    carry the map's nodata value.

    Raises:
        UserError: the file cannot be written.
    """
    grid = time_series_grid(raster_path)
    bands = [class_map.values] + ([class_map.confidence] if with_confidence else [])
    names = ["class"] + (["confidence_percent"] if with_confidence else [])
    try:
        write_raster(path, np.stack(bands, axis=-1), crs=grid.crs, transform=grid.transform,
                     nodata=class_map.nodata, band_names=names)
    except Exception as error:  # rasterio's and GDAL's write errors
        raise UserError(f"Cannot write the class map {path}: "
                        f"{str(error).strip().splitlines()[0] if str(error).strip() else error}"
                        f". Received: --class-map {path}") from None
    return path
