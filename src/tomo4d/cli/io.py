"""``tomo4d info`` and ``tomo4d convert``."""

# Library imports stay inside the commands: `tomo4d --help` imports every command module, and the
# library packages cost 15-340 ms each to import (measured, issue 17); core ones sit at the top.
from __future__ import annotations

import click

from ._paths import declare_paths
from ._util import emit, json_option, option_group, overwrite_option, parse_triple, progress_bar, voxel_size_option

_with_raw_options = option_group(
    click.option("--shape", default=None, help="Raw input only: Z,Y,X."),
    click.option("--dtype", default=None, help="Raw input only: numpy dtype, e.g. uint16."),
)


def _raw_kw(shape, dtype):
    kw = {}
    if shape is not None:
        kw["shape"] = parse_triple(shape, name="--shape", kind=int)
    if dtype is not None:
        kw["dtype"] = dtype
    return kw


def _info_lines(inf):
    """The ``tomo4d info`` table of a :class:`VolumeInfo`, line by line."""
    vs = ", ".join(f"{v:g}" for v in inf.voxel_size_nm)
    rows = [
        ("path", inf.path), ("format", inf.format), ("shape (z, y, x)", " x ".join(map(str, inf.shape))),
        ("dtype", inf.dtype), ("voxel size (z, y, x)", f"{vs} nm" + ("" if inf.voxel_size_known else " (unknown)")),
        ("size", f"{inf.size_bytes / 2**20:.1f} MiB"),
        ("chunks", " x ".join(map(str, inf.chunks)) if inf.chunks else "-"),
        (f"range (sampled {len(inf.sampled_slices)} slices)", f"{inf.sample_min:g} .. {inf.sample_max:g}, "
                                                               f"mean {inf.sample_mean:g}"),
    ]
    meta = {k: v for k, v in inf.metadata.items() if v not in (None, "", [], {})}
    rows += [(f"metadata.{k}", str(v)) for k, v in meta.items()]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        yield f"{k:<{width}}  {v}"


@declare_paths(inputs=("path",))
@click.command()
@click.argument("path", type=click.Path(path_type=str))
@click.option("--dataset", default=None, help="HDF5 dataset or Zarr array inside the file.")
@json_option
@_with_raw_options
def info(path, dataset, as_json, shape, dtype):
    """Describe a volume: shape, dtype, voxel size, value range (sampled), chunks, metadata."""
    from ..io import volume_info

    inf = volume_info(path, dataset=dataset, **_raw_kw(shape, dtype))
    emit(inf.to_dict, as_json=as_json, text=_info_lines(inf))


@declare_paths(inputs=("src",), outputs=("dst",))
@click.command()
@click.argument("src", type=click.Path(path_type=str))
@click.argument("dst", type=click.Path(path_type=str))
@voxel_size_option
@click.option("--dataset", default=None, help="HDF5 dataset / Zarr array to read.")
@click.option("--out-dataset", default=None, help="HDF5 dataset / Zarr array to write.")
@click.option("--compression", default=None, help="Output compression (format dependent).")
@click.option("--levels", default=1, show_default=True, help="OME-Zarr output: number of resolution levels.")
@overwrite_option
@_with_raw_options
def convert(src, dst, voxel_size, dataset, out_dataset, compression, levels, overwrite, shape, dtype):
    """Convert a volume between formats, streaming chunk by chunk (bounded memory)."""
    from ..io import convert as _convert

    vs = parse_triple(voxel_size, name="--voxel-size")
    with progress_bar(f"converting {src}") as progress:
        out = _convert(src, dst, voxel_size_nm=vs, dataset=dataset, out_dataset=out_dataset,
                       compression=compression, overwrite=overwrite, levels=levels, progress=progress,
                       **_raw_kw(shape, dtype))
    click.echo(f"wrote {out}")
