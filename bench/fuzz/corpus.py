"""The seed corpus the generators draw from: addresses (official, personal, other, local
recipients), display names, subjects, body lines, charsets, content types and header names,
and a signed PDF with the CMS signature cut out of it. It is fixed data, embedded here so that
every run of a seed produces the same bytes."""

from __future__ import annotations

import base64
import binascii
import re
import zlib
from dataclasses import dataclass

# A one-page PDF signed (PAdES, ECDSA) by "Nguyen Van A <a.nguyen@dilinh.lamdong.gov.vn>" under
# a test CA the gateway does not trust; zlib, then base64. Embedded so that every run generates
# the same bytes (a signature made at run time would differ each time).
_SIGNED_PDF_Z = (
    "eNrtWdtuG8cZvudTDFgYkFFIO+eDICnYnQNixEoMSUmKxkGxJJcyY4krkLQk+3161ate96JA+kB9hX6zPIiy5CBO"
    "GgQBvDztzvzzn/9vhjNPXoS0y/ZM78mPf//xn//5R48RStrBD72Dg15x9vaqIYWvF/VFe94rXtTnzZxwEJz0jo56"
    "zXSUCfmDAR1dr/Dtm+mCsF7xxWQ0J98RmQeS77eGiq2hz5vp+eIVMTr3zxezpr7sVWekSIwwSc7GxHC8KTkbkR3f"
    "Ts/JdT0l85YwLoqvqy/D7jcvyHVDrifNkAzqlgzxebnDXj59Ss5+IPEsy1yxXUmXjyreK46b0aSu2luoTPFSThEr"
    "ORQvTpp5+2Y2hBPymNTCvO6GkTseubVXnL4ZLLrH3AgXVPW86eiLz5uL62YxGdbZzuUbnpoumuliTkTnW+gxw+MD"
    "T6sthY/bUagXDdkJL6nhnHLNGOfMccH0X5+CxawdvRk2M7Jz9fbzevq6JfQlVVrY/E2fbnG9nTXjHiW6RzcX0UoJ"
    "RcZk08YMWfZM79q0ftDGuHrQxhV70Ca5vWtbzOrJRTPrzDppW6TM0gvPpuOWqNV9QDQOXMMhoRkMraOaN7VTI8UH"
    "A9o0jZCSj4/IgRkKwcesMQNu6rFlY6mUksZQWVujB/wox/F08q4hq0SrZ4vOA4rJ3pMn8av0cyugKIezNrWzS2KW"
    "z/EWQZxP2ukyPeLpM7+VF6G5bi7aq2Z2R7ZMi2+aWX4iRa7COybPMz2qJ+fHs9Ov/pbt/whmfI8+YCY4otErvj55"
    "TnZeLRZX85w6yAeTPzc3Nzk1JvM2/7Sz89wI90xH9WyU76WyRuW+V4vLi6dbzE+a60kndGeVijyn17LQi/sKHTeL"
    "egRnEkbfy+0/SDEW5XTaLjKa2Qdo9tuUp9nimibNxWhbODL5PF3U51B2a4jdHgIIBREcQnbwy56uXdMZsuWbbyej"
    "8wYNiTDBs3eHi5XP8wuiXiwBHCEl7r3guS2BG/cdCGo51SJSTR0vrZbW6mRooIwaysuul6clFa8oRzsTjKIFNBij"
    "aR5DmVZUUNn1K4pbWj3KkXUcpRYdR06r7pdVaMegPBqtTJokQulsGULiNDipgCgy5PCoMsjSu2BYKJmDnBJy7FKO"
    "jyJAB/ARVBhoCe4UIESFUmjXDD1KyygYwy1Nm56SemqV1MoIIzkMkJV0oFICxm6oBKj8FhXXCYbhTgoJMhYZrBRc"
    "KAEPQYP82bxU2fUKobt2Ltz9XnyX/weNLfTQ9zROd1TS4VcYpZ2O2qz1Vm5lpdnyYo7Efb+KLn4CbDAz6MpUcDGt"
    "kvfGG1PyqjI6Vcz7FCrnBTehqkRUlY9OSJsid5XlXjJVCcQz+FJ5FVXQNFoO7opbI2KkKglrTShLw6vSliVyodJV"
    "gGWBGs9D8FzFxEphGYyh+JZ3fmEhh4GylGA7YkdXT7iLawrQrinkKuM0yMKmP1IJD0omE81CuLaqMk5VZVLQIyhv"
    "vQoyJV/ijjsN+WwjH4knlzFAScgy2cpGx51RHCkegrI68Kii9JIGGb2OhkWRY882FkAzjhYOLlyXlEt8uNUoP2sk"
    "XsgTnnjSwnDteTTr6MYcVaM10x53kiezzs+4pP1QrSCmNrtKKpox0AavU4rKcGa1pjChkpGX0gZnUI3GBu0RdUal"
    "z7UbbDQ0eQgQPmJFAh6MUhvhJbTIZG3k+TJIf6RzrKgvUQNClSmhhI1MxjvUlRRM4jlXurVLVOAZUjI6JH0fHZAT"
    "PnIfuFYh5xy3jFFbwooU0UqjMMF3NfhBdPidam2DEXqFDvwRjODCdr3ifQQRuQB/Sm/0MLetN/BSSS4j1l05f5Rx"
    "WukIbaR2+PaddvZxpJPQ+26EypmVR8KvPEDkY/juKGOaRc2Qc1ujoSTk6ZU09HnwCmhLnW/wAQPNc/bGX4ZHMpYm"
    "qQCdmJYMxW5SCsJJlF2sHI/UOLgjpGCDMNCQiwoTVumC9zIEIDYSXShktSuBQtpU6KQRXF3JpRJJJs6dBHOEhpYa"
    "hYd6Qr+tnBVCVhmPyjynYR5DdPwjeIRId/Pih5FI558PYcnPRyPuNtJRpJxn1iiQXxkVIe8hVJcBWRbQyeADZENS"
    "fyRC6fs18lE4BTqtnC8Z97pyAtFwwFtmorOABYsVjRfoqRA8xSpbVlpKVbEIDIP9li1xquTOR5Uqh/QI3sXSU+EA"
    "gQngl7TGaIUsYyA1mMM09YlL44ynJUsQBdDK+OSW6yPm1usjTGe/F8Z8JD7+xBoOKzUWEHlmH610ka17fI0HI9Oj"
    "Y+AvhA6aO2lESsoih0tfJVFKVBvqC6sIC6qyKhXWhoEF6ypfYf6jWAwKa2JOj4T/vXnmx59bWr0vA0HlWK8yC7WB"
    "l9DfYAhSFFIN5lIUKKoiYlqmTiXLKw9CB4GYrJnWLgI9kDHW6zxjeVRarJLEalNJ4C/mNCpiKZFvf4z4Pl5JcDUC"
    "LXMdMfAOQMjIE0PpoFw0st0pDxeBWxnh64gETxWcGEKsUKYhIEE4i7G0VeYBu2ksS9RjxAzPQ8l5BGDxmOBAgwvr"
    "QOc1sEEAR73HEoMZxUwlsSJUnn66Pl2frk/Xp+vT9Wuuo15RvV00J/X0vCHfUcI01wTrPtxhGvyefMS13oDrduXS"
    "5GLRzEhRjtpBs/fixRfPJ4um25Vb98Sz02d7vhzF071Rs6iHr5pRrzj+0Mbi3Z5ct8N6f0d1vfu6tev3l+Pnm6MX"
    "qe3W2cvBZ7dX9fB1syCD5nwyPez/91//7pPJ6LD/rTqmx1e+eTX5/N2sOX335dnw3euhG/U/O+od3O7fXl5dQhC5"
    "vbyYzvdvD/t1tm0f97m56JOOZPH6sL/Z+twTdo/2MXo2Gu+fhLQai6fDft6o3i+Km5ubvRux187OC+acKygvON8F"
    "xe787XRR3+5O539acwjNfDibXC3yvvMv5LTW/vJqM2463+ss2Ru2l8VtfVWwPVqsCa+2BNwjRAcIRUd4tX/cjibj"
    "t3ln+LCfY7fL2C7nZ8ztc7HP9J8p3ae0TzBof71D/MBNJJtYD9o3i8N+v4DJxcpr+Xbj/qOtACIjDvuzHJ4HZ2Cr"
    "wx/+U4c/xm4d/sgNLf6P0/cPdhgWm3dthsh1u5QPDoGYdPxBm6YPDpDwr878RodFbmzc2A7NSA7MkA+GpqFuODRY"
    "3I7qcd2Iu8MixvKefXNN8jHRvXMjw7RZHRz9D33Nvyw="
)

_OFFICIAL = (
    "a.nguyen@dilinh.lamdong.gov.vn",
    "vanthu@lamdong.gov.vn",
    "tranthib@sotc.hanoi.gov.vn",
    "phongnv@ubnd.dalat.lamdong.gov.vn",
    "ketoan@baoloc.lamdong.gov.vn",
    "lanhdao@DILINH.LAMDONG.GOV.VN",
    "vp@xn--tnh-ypa.gov.vn",
    "chanh.vp@lâmđồng.gov.vn",
)
_PERSONAL = (
    "nguyenvana@gmail.com",
    "NguyenVanA@GMAIL.COM",
    "b.tran@yahoo.com.vn",
    "c.le@outlook.com",
    "d.pham@hotmail.com",
    "e.vo@icloud.com",
    "f.do@zing.vn",
    "g.hoang@googlemail.com",
)
_OTHER = (
    "info@congty.com.vn",
    "noreply@dichvucong.gov.vn",
    "no-reply@facebookmail.com",
    "postmaster@lamdong.gov.vn",
    "MAILER-DAEMON@mx.example.net",
    "bounce+abc=def@lists.example.org",
)
_LOCAL_RCPTS = (
    "vanthu@lamdong.gov.vn",
    "tiepdan@lamdong.gov.vn",
    "lanhdao@lamdong.gov.vn",
    "VanThu@LamDong.Gov.Vn",
    "phongnv@lamdong.gov.vn",
)
_EXTERNAL_RCPTS = ("someone@example.com", "x@gmail.com", "vanthu@lamdong.gov.vn.evil.example")
_NAMES = (
    "Nguyễn Văn A",
    "Trần Thị Bích",
    "UBND huyện Di Linh",
    "Văn thư",
    "Nguyen Van A",
    "Phòng Tài chính - Kế hoạch",
    "vanthu@lamdong.gov.vn",
    "Lãnh đạo UBND tỉnh (lanhdao@lamdong.gov.vn)",
    'Quote "q" Name',
    "",
)
_SUBJECTS = (
    "Báo cáo tuần",
    "V/v triển khai Kế hoạch số 123/KH-UBND",
    "Giấy mời họp",
    "Công văn số 45/UBND-VP",
    "Thông báo kết luận của Chủ tịch UBND huyện",
    "Re: Fw: Dự thảo quyết định",
    "Tờ trình phê duyệt dự toán",
    "Bao cao thang 11",
    "",
)
_BODY_LINES = (
    "Kính gửi: Văn thư UBND huyện.",
    "Thực hiện Công văn số 1234/UBND-VP ngày 20/11/2026 của UBND tỉnh Lâm Đồng,",
    "Phòng Tài chính - Kế hoạch gửi kèm báo cáo theo yêu cầu.",
    "Trân trọng./.",
    "Nơi nhận: - Như trên; - Lưu: VT.",
    "Mọi chi tiết xin liên hệ: nguyenvana@gmail.com, ĐT 0263 123 456.",
    "Đăng ký tài khoản tại https://dichvucong.gov.vn/p/home/dvc-dang-ky.html",
    "Xác nhận đăng ký tài khoản Facebook của bạn",
    "Hộp thư tiếp dân: tiepdan@lamdong.gov.vn",
    "-- ",
    "Nguyen Van A | a.nguyen@dilinh.lamdong.gov.vn | c.le@outlook.com",
    ".",
    "..leading dots",
    "From the desk of the chairman",
)
_CHARSETS = (
    "utf-8",
    "UTF-8",
    "us-ascii",
    "iso-8859-1",
    "windows-1258",
    "x-bogus-charset",
    "utf-16",
    "utf-7",
    "",
    "unicode-1-1-utf-7",
    "\x00",
)


_MAIN_TYPES = (
    "text/plain",
    "text/html",
    "application/pdf",
    "application/octet-stream",
    "application/zip",
    "application/msword",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/pkcs7-signature",
    "application/x-pkcs7-signature",
    "application/pkcs7-mime",
    "application/ms-tnef",
    "message/rfc822",
    "message/delivery-status",
    "multipart/mixed",
    "multipart/signed",
    "image/png",
    "text/rfc822-headers",
    "application/",
    "a/b/c",
    "x",
    "",
)
_FIELD_NAMES = (
    "From",
    "Sender",
    "Reply-To",
    "To",
    "Cc",
    "Subject",
    "Content-Type",
    "Content-Transfer-Encoding",
    "Content-Disposition",
    "MIME-Version",
    "X-Document-Class",
    "Received",
    "Return-Path",
    "DKIM-Signature",
    "Authentication-Results",
    "X-Congvu-Decision",
    "Auto-Submitted",
    "Precedence",
    "List-Id",
    "Message-ID",
    "X-Mailer",
    "Thread-Topic",
)
_DOCUMENT_CLASSES = ("ban-do", "an-pham", "quy-hoach", "ban-ve-thiet-ke", "BAN-DO", "khac", "")


def _signed_pdf() -> bytes:
    return zlib.decompress(base64.b64decode("".join(_SIGNED_PDF_Z)))


def _cms_of(pdf: bytes) -> tuple[bytes, bytes]:
    """The CMS SignedData in ``pdf``'s last signature, and the bytes it signs (its ranges)."""
    start = pdf.rindex(b"/Contents <") + len(b"/Contents <")
    end = pdf.index(b">", start)
    der = binascii.unhexlify(pdf[start:end])
    size = der[1]  # the DER length of the outer SEQUENCE: short or long form
    if size & 0x80:
        width = size & 0x7F
        size = 2 + width + int.from_bytes(der[2 : 2 + width], "big")
    else:
        size += 2
    cms = der[:size]
    ranges = re.findall(rb"/ByteRange \[\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*\]", pdf)
    a, b, c, d = (int(x) for x in ranges[-1])
    return cms, pdf[a : a + b] + pdf[c : c + d]


def _plain_pdf(text: str) -> bytes:
    """A minimal one-page PDF, built by hand (so the bytes are always the same)."""
    content = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode("latin-1", "replace")
    bodies = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content),
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(bodies, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(bodies) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(bodies) + 1,
        xref,
    )
    return bytes(out)


@dataclass(frozen=True)
class _Corpus:
    signed_pdf: bytes
    cms: bytes
    cms_content: bytes
    plain_pdf: bytes


_CORPUS: _Corpus | None = None


def _corpus() -> _Corpus:
    global _CORPUS  # noqa: PLW0603 - built once per process, read-only afterwards
    if _CORPUS is None:
        signed = _signed_pdf()
        cms, content = _cms_of(signed)
        _CORPUS = _Corpus(signed, cms, content, _plain_pdf("Cong van so 45/UBND-VP"))
    return _CORPUS
