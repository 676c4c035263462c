"""AV1: OBU splitting, the sequence header and the av1C config record."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from flumph.media.bitstream.bits import BitReader

OBU_SEQUENCE_HEADER = 1
OBU_TEMPORAL_DELIMITER = 2
OBU_FRAME_HEADER = 3
OBU_TILE_GROUP = 4
OBU_METADATA = 5
OBU_FRAME = 6
OBU_TILE_LIST = 8
OBU_PADDING = 15


@dataclass(frozen=True)
class Obu:
    obu_type: int
    extension: int | None  # the extension header byte, when present
    payload: bytes
    raw: bytes  # the OBU exactly as it appeared, header included


def _read_leb128(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for index in range(8):
        if pos + index >= len(data):
            raise ValueError(f"AV1 OBU size field is truncated at offset {pos + index}")
        byte = data[pos + index]
        value |= (byte & 0x7F) << (7 * index)
        if not byte & 0x80:
            if value > 0xFFFFFFFF:
                raise ValueError(f"AV1 OBU size {value} exceeds 2**32 - 1")
            return value, pos + index + 1
    raise ValueError(f"AV1 OBU size field at offset {pos} is longer than 8 bytes")


def leb128(value: int) -> bytes:
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"leb128 value {value} is outside 0..2**32-1")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def split_obus(data: bytes) -> list[Obu]:
    """Split low-overhead AV1 data into OBUs; an OBU without a size field runs to the end."""
    obus: list[Obu] = []
    pos = 0
    while pos < len(data):
        start = pos
        header = data[pos]
        if header & 0x80:
            raise ValueError(f"AV1 OBU at offset {pos} has its forbidden bit set")
        obu_type = (header >> 3) & 0x0F
        has_extension = bool(header & 0x04)
        has_size = bool(header & 0x02)
        pos += 1
        extension = None
        if has_extension:
            if pos >= len(data):
                raise ValueError(f"AV1 OBU at offset {start} is truncated in its extension header")
            extension = data[pos]
            pos += 1
        if has_size:
            size, pos = _read_leb128(data, pos)
        else:
            size = len(data) - pos
        if size > len(data) - pos:
            raise ValueError(
                f"AV1 OBU of type {obu_type} at offset {start} claims {size} bytes but "
                f"{len(data) - pos} remain"
            )
        obus.append(
            Obu(
                obu_type=obu_type,
                extension=extension,
                payload=data[pos : pos + size],
                raw=data[start : pos + size],
            )
        )
        pos += size
    return obus


def obu_bytes(obu_type: int, payload: bytes, extension: int | None = None) -> bytes:
    """Serialize an OBU with a size field."""
    header = (obu_type << 3) | 0x02 | (0x04 if extension is not None else 0)
    ext = b"" if extension is None else bytes([extension])
    return bytes([header]) + ext + leb128(len(payload)) + payload


@dataclass(frozen=True)
class Av1SequenceHeader:
    profile: int
    still_picture: bool
    level_idx: int  # of operating point 0
    tier: int  # of operating point 0
    max_width: int
    max_height: int
    bit_depth: int
    monochrome: bool
    subsampling_x: int
    subsampling_y: int
    chroma_sample_position: int
    color_primaries: int
    transfer_characteristics: int
    matrix_coefficients: int
    color_range: int

    @property
    def high_bitdepth(self) -> bool:
        return self.bit_depth > 8

    @property
    def twelve_bit(self) -> bool:
        return self.bit_depth == 12


def _skip_av1_operating_points(
    r: BitReader, decoder_model_info: bool, buffer_delay_bits: int, display_delay: bool
) -> tuple[int, int]:
    level0 = tier0 = 0
    for index in range(r.u(5) + 1):
        r.skip(12)  # operating_point_idc
        level = r.u(5)
        tier = r.u(1) if level > 7 else 0
        if index == 0:
            level0, tier0 = level, tier
        if decoder_model_info and r.flag():
            r.skip(2 * buffer_delay_bits + 1)  # decoder/encoder_buffer_delay, low_delay_mode
        if display_delay and r.flag():
            r.skip(4)  # initial_display_delay_minus_1
    return level0, tier0


def parse_av1_sequence_header(payload: bytes) -> Av1SequenceHeader:
    """Parse a sequence_header_obu() payload (AV1 spec 5.5) through color_config()."""
    r = BitReader(payload, "AV1 sequence header")
    profile = r.u(3)
    if profile > 2:
        raise ValueError(f"AV1 sequence header: seq_profile {profile} is reserved")
    still_picture = r.flag()
    reduced = r.flag()
    if reduced:
        level0, tier0 = r.u(5), 0
    else:
        timing_info = r.flag()
        decoder_model_info = False
        buffer_delay_bits = 0
        if timing_info:
            r.skip(64)  # num_units_in_display_tick, time_scale
            if r.flag():  # equal_picture_interval
                r.uvlc("num_ticks_per_picture_minus_1")
            decoder_model_info = r.flag()
            if decoder_model_info:
                buffer_delay_bits = r.u(5) + 1
                r.skip(32 + 5 + 5)
        display_delay = r.flag()
        level0, tier0 = _skip_av1_operating_points(
            r, decoder_model_info, buffer_delay_bits, display_delay
        )
    width_bits = r.u(4) + 1
    height_bits = r.u(4) + 1
    max_width = r.u(width_bits) + 1
    max_height = r.u(height_bits) + 1
    if not reduced and r.flag():  # frame_id_numbers_present_flag
        r.skip(4 + 3)
    r.skip(3)  # use_128x128_superblock, enable_filter_intra, enable_intra_edge_filter
    if not reduced:
        r.skip(4)  # interintra, masked compound, warped motion, dual filter
        order_hint = r.flag()
        if order_hint:
            r.skip(2)  # enable_jnt_comp, enable_ref_frame_mvs
        force_screen_content_tools = 2 if r.flag() else r.u(1)
        if force_screen_content_tools > 0 and not r.flag():
            r.skip(1)  # seq_force_integer_mv
        if order_hint:
            r.skip(3)  # order_hint_bits_minus_1
    r.skip(3)  # enable_superres, enable_cdef, enable_restoration
    return _parse_av1_color_config(r, profile, still_picture, level0, tier0, max_width, max_height)


def _parse_av1_color_config(
    r: BitReader,
    profile: int,
    still_picture: bool,
    level0: int,
    tier0: int,
    max_width: int,
    max_height: int,
) -> Av1SequenceHeader:
    high_bitdepth = r.flag()
    if profile == 2 and high_bitdepth:
        bit_depth = 12 if r.flag() else 10
    else:
        bit_depth = 10 if high_bitdepth else 8
    monochrome = False if profile == 1 else r.flag()
    primaries = transfer = matrix = 2  # CP/TC/MC_UNSPECIFIED
    if r.flag():  # color_description_present_flag
        primaries, transfer, matrix = r.u(8), r.u(8), r.u(8)
    sample_position = 0
    if monochrome:
        color_range = r.u(1)
        subsampling_x = subsampling_y = 1
    elif primaries == 1 and transfer == 13 and matrix == 0:  # sRGB
        color_range = 1
        subsampling_x = subsampling_y = 0
    else:
        color_range = r.u(1)
        if profile == 0:
            subsampling_x = subsampling_y = 1
        elif profile == 1:
            subsampling_x = subsampling_y = 0
        elif bit_depth == 12:
            subsampling_x = r.u(1)
            subsampling_y = r.u(1) if subsampling_x else 0
        else:
            subsampling_x, subsampling_y = 1, 0
        if subsampling_x and subsampling_y:
            sample_position = r.u(2)
    return Av1SequenceHeader(
        profile=profile,
        still_picture=still_picture,
        level_idx=level0,
        tier=tier0,
        max_width=max_width,
        max_height=max_height,
        bit_depth=bit_depth,
        monochrome=monochrome,
        subsampling_x=subsampling_x,
        subsampling_y=subsampling_y,
        chroma_sample_position=sample_position,
        color_primaries=primaries,
        transfer_characteristics=transfer,
        matrix_coefficients=matrix,
        color_range=color_range,
    )


def find_sequence_header(obus: Iterable[Obu]) -> Obu | None:
    for obu in obus:
        if obu.obu_type == OBU_SEQUENCE_HEADER:
            return obu
    return None


@dataclass(frozen=True)
class Av1Config:
    """An AV1CodecConfigurationRecord (av1C payload)."""

    profile: int
    level_idx: int
    tier: int
    high_bitdepth: bool
    twelve_bit: bool
    monochrome: bool
    subsampling_x: int
    subsampling_y: int
    chroma_sample_position: int
    initial_presentation_delay_minus_one: int | None
    config_obus: bytes

    @property
    def bit_depth(self) -> int:
        if self.twelve_bit:
            return 12
        return 10 if self.high_bitdepth else 8

    def sequence_header(self) -> Av1SequenceHeader | None:
        obu = find_sequence_header(split_obus(self.config_obus))
        return None if obu is None else parse_av1_sequence_header(obu.payload)


def parse_av1c(record: bytes) -> Av1Config:
    if len(record) < 4:
        raise ValueError(f"av1C record of {len(record)} bytes is shorter than its 4-byte header")
    if record[0] != 0x81:
        raise ValueError(f"av1C starts with 0x{record[0]:02x}, expected 0x81 (marker 1, version 1)")
    flags = record[2]
    config_obus = record[4:]
    split_obus(config_obus)  # validates the framing
    delay_present = bool(record[3] & 0x10)
    return Av1Config(
        profile=record[1] >> 5,
        level_idx=record[1] & 0x1F,
        tier=flags >> 7,
        high_bitdepth=bool(flags & 0x40),
        twelve_bit=bool(flags & 0x20),
        monochrome=bool(flags & 0x10),
        subsampling_x=(flags >> 3) & 1,
        subsampling_y=(flags >> 2) & 1,
        chroma_sample_position=flags & 0x03,
        initial_presentation_delay_minus_one=(record[3] & 0x0F) if delay_present else None,
        config_obus=config_obus,
    )


def av1c_from_sequence_header(obus: bytes) -> bytes:
    """Build an av1C record from AV1 OBUs that include a sequence header OBU."""
    header_obu = find_sequence_header(split_obus(obus))
    if header_obu is None:
        raise ValueError("AV1 data holds no sequence header OBU to build av1C from")
    seq = parse_av1_sequence_header(header_obu.payload)
    flags = (
        (seq.tier << 7)
        | (int(seq.high_bitdepth) << 6)
        | (int(seq.twelve_bit) << 5)
        | (int(seq.monochrome) << 4)
        | (seq.subsampling_x << 3)
        | (seq.subsampling_y << 2)
        | seq.chroma_sample_position
    )
    config_obu = obu_bytes(OBU_SEQUENCE_HEADER, header_obu.payload, header_obu.extension)
    # initial_presentation_delay is left absent, as FFmpeg writes it.
    return bytes([0x81, (seq.profile << 5) | seq.level_idx, flags, 0]) + config_obu
