"""The one table of outcomes: every reason code, its SMTP reply, its explanation and its source.

Auditors and translators review this file alone. Each entry gives the action, the SMTP reply
code and enhanced status code (RFC 3463), the short reply text (printable ASCII: Vietnamese
without diacritics, then English), a full explanation and a fix in Vietnamese (with
diacritics) and English for notices, and the directive that requires it. A district can
override the directive citation in its policy file (``[citations]``); nothing else here is
policy. ``tests/policies/test_reasons.py`` checks the table's invariants.
"""

from __future__ import annotations

from dataclasses import dataclass

from policies.addresses import ascii_fold
from policies.model import MAX_REPLY_LINE, Action, Reply

__all__ = ["MAX_REPLY_LINE", "REASONS", "Reason", "reply_for"]


_PHU_MY_1 = (
    "Công văn của UBND huyện Phù Mỹ (Bình Định) năm 2022 về tăng cường sử dụng Văn phòng "
    "điện tử và thư điện tử công vụ, mục 1: thực hiện 100% giao dịch văn bản, báo cáo qua hộp "
    "thư công vụ; không sử dụng hộp thư gmail hoặc yahoo của cá nhân để giao dịch văn bản tài "
    "liệu của cơ quan, đơn vị. Công văn số 289/UBND-VX ngày 16/4/2018 của UBND huyện Phú Giáo, "
    "mục 1."
)

_PHU_MY_2 = (
    "Công văn của UBND huyện Phù Mỹ (Bình Định) năm 2022, mục 2: thực hiện 100% việc gửi, "
    "trình các loại văn bản được ký số điện tử (trừ văn bản mật, tài liệu quy hoạch, bản đồ, "
    "bản vẽ thiết kế, ấn phẩm, vật phẩm); các văn bản gửi liên thông không được ký số điện tử "
    "sẽ bị trả về, không được tiếp nhận. Nghị định 30/2020/NĐ-CP về công tác văn thư (chữ ký số "
    "của người có thẩm quyền và của cơ quan, tổ chức)."
)
_FIX_SIGN_VI = (
    "Ký số văn bản bằng chứng thư số của đơn vị (Ban Cơ yếu Chính phủ hoặc tổ chức cung cấp "
    "dịch vụ chứng thực chữ ký số công cộng) rồi gửi lại; nếu văn bản thuộc loại được miễn "
    "(bản đồ, bản vẽ thiết kế, quy hoạch, ấn phẩm), khai báo loại văn bản khi gửi."
)
_FIX_SIGN_EN = (
    "Sign the document with your unit's certificate (Government CA or a licensed public CA) and "
    "send it again; if it is an exempt kind (map, design drawing, planning, publication), "
    "declare that kind when sending."
)


def _document(code: str, enhanced: str, *texts: str) -> Reason:
    """A document-signature refusal: texts are reply_vi, reply_en, explain_vi, explain_en."""
    vi, en, explain_vi, explain_en = texts
    return Reason(
        code,
        Action.REJECT,
        550,
        enhanced,
        vi,
        en,
        explain_vi,
        explain_en,
        _FIX_SIGN_VI,
        _FIX_SIGN_EN,
        _PHU_MY_2,
    )


@dataclass(frozen=True)
class Reason:
    """One reason code and everything said about it."""

    code: str
    action: Action
    smtp_code: int
    enhanced: str
    reply_vi: str  # printable ASCII, no diacritics: SMTP replies are ASCII
    reply_en: str
    explain_vi: str
    explain_en: str
    fix_vi: str
    fix_en: str
    directive: str  # default citation; "" where the requirement is technical, not a directive


REASONS: dict[str, Reason] = {
    r.code: r
    for r in [
        _document(
            "document.unsigned",
            "5.7.1",
            "Van ban dinh kem chua duoc ky so",
            "Attached official document is not digitally signed",
            "Văn bản đính kèm không có chữ ký số. Văn bản gửi liên thông không được ký số bị trả "
            "về, không được tiếp nhận.",
            "The attached document carries no digital signature. Unsigned documents between "
            "units are returned, not received.",
        ),
        _document(
            "document.signature_invalid",
            "5.7.7",
            "Chu ky so cua van ban khong hop le",
            "The document's digital signature is invalid",
            "Chữ ký số trên văn bản bị hỏng hoặc không đúng định dạng, hoặc không khớp nội dung.",
            "The document's signature is broken, malformed, or does not match the content.",
        ),
        _document(
            "document.modified_after_signing",
            "5.7.7",
            "Van ban da bi sua sau khi ky so",
            "The document was modified after it was signed",
            "Chữ ký không hợp lệ: tài liệu đã bị sửa sau khi ký (thêm nội dung, thay trang, "
            "thêm ghi chú, hoặc điền biểu mẫu giữa hai lần ký).",
            "Invalid signature: the document was changed after signing (content added, pages "
            "changed, a note added, or a form filled in between two signatures).",
        ),
        _document(
            "document.signer_untrusted",
            "5.7.1",
            "Chung thu so cua nguoi ky khong duoc tin cay",
            "The signer's certificate is not from a trusted authority",
            "Chứng thư số của người ký không thuộc tổ chức chứng thực được tin cậy (Ban Cơ yếu "
            "Chính phủ, tổ chức chứng thực công cộng được cấp phép).",
            "The signing certificate does not chain to a trusted authority (Government CA or a "
            "licensed public CA).",
        ),
        _document(
            "document.signer_expired",
            "5.7.1",
            "Chung thu so cua nguoi ky het han (khong co dau thoi gian chung minh ngay ky)",
            "The signer's certificate is expired (no timestamp proves an earlier signing)",
            "Chứng thư số của người ký đã hết hạn (hoặc chưa có hiệu lực) tại thời điểm ký. "
            "Thời điểm ký chỉ được tin khi có dấu thời gian (timestamp) tin cậy; không có dấu "
            "thời gian thì chứng thư số phải còn hiệu lực khi thư được gửi.",
            "The signing certificate was expired (or not yet valid) at the time of signing. "
            "Only a trusted timestamp proves that time; without one, the certificate must be "
            "valid when the mail is sent.",
        ),
        _document(
            "document.signer_revoked",
            "5.7.1",
            "Chung thu so cua nguoi ky da bi thu hoi",
            "The signer's certificate has been revoked",
            "Chứng thư số của người ký đã bị thu hồi trước thời điểm ký.",
            "The signing certificate was revoked before the document was signed.",
        ),
        _document(
            "document.revocation_unknown",
            "5.7.1",
            "Khong xac dinh duoc tinh trang thu hoi cua chung thu so",
            "The signer's revocation status cannot be established",
            "Không xác định được chứng thư số của người ký có bị thu hồi hay không; chính sách "
            "của đơn vị không nhận văn bản như vậy.",
            "Whether the signing certificate is revoked cannot be established, and the policy "
            "does not accept such documents.",
        ),
        _document(
            "document.unreadable",
            "5.6.0",
            "Khong doc duoc van ban dinh kem",
            "The attached document cannot be read",
            "Tệp văn bản bị hỏng, bị mã hóa, hoặc vượt giới hạn kích thước/thời gian kiểm tra.",
            "The document file is corrupt, encrypted, or over the size or time limit for checking.",
        ),
        Reason(
            code="document.revocation_unavailable",
            action=Action.TEMPFAIL,
            smtp_code=451,
            enhanced="4.7.5",
            reply_vi="Chua kiem tra duoc tinh trang thu hoi chung thu so, vui long gui lai sau",
            reply_en="Certificate revocation data unavailable, try again later",
            explain_vi="Danh sách thu hồi chứng thư số (CRL) đã cũ hoặc chưa có; thư chưa được "
            "nhận.",
            explain_en="The certificate revocation list is stale or missing; nothing accepted.",
            fix_vi="Máy chủ thư của anh/chị sẽ tự gửi lại; quản trị cập nhật CRL.",
            fix_en="Your mail server will retry; the admin updates the CRLs.",
            directive="",
        ),
        Reason(
            code="message.smime_invalid",
            action=Action.REJECT,
            smtp_code=550,
            enhanced="5.7.7",
            reply_vi="Chu ky S/MIME cua thu khong hop le",
            reply_en="The message's S/MIME signature is invalid",
            explain_vi="Thư được ký S/MIME nhưng chữ ký không hợp lệ, không được tin cậy, hoặc "
            "không khớp địa chỉ người gửi.",
            explain_en="The message is S/MIME-signed but the signature is invalid, untrusted, or "
            "does not match the From address.",
            fix_vi=_FIX_SIGN_VI,
            fix_en=_FIX_SIGN_EN,
            directive=_PHU_MY_2,
        ),
        Reason(
            code="document.exempted",
            action=Action.ACCEPT,
            smtp_code=250,
            enhanced="2.0.0",
            reply_vi="Van ban thuoc loai duoc mien ky so",
            reply_en="Document of an exempt kind",
            explain_vi="Người gửi khai báo văn bản thuộc loại được miễn ký số (bản đồ, bản vẽ "
            "thiết kế, quy hoạch, ấn phẩm…); khai báo được ghi lại để kiểm tra.",
            explain_en="The sender declared the document an exempt kind (map, design drawing, "
            "planning, publication...); the claim is recorded for audit.",
            fix_vi="Không cần làm gì.",
            fix_en="Nothing to do.",
            directive=_PHU_MY_2,
        ),
        Reason(
            code="advisory.public_service_registration",
            action=Action.ACCEPT,
            smtp_code=250,
            enhanced="2.0.0",
            reply_vi="Dia chi cong vu duoc dung de dang ky dich vu cong cong",
            reply_en="Official address used to register with a public service",
            explain_vi="Hộp thư công vụ nhận thư từ mạng xã hội hoặc dịch vụ ngân hàng điện tử: "
            "địa chỉ công vụ đã được dùng để đăng ký dịch vụ, điều công văn yêu cầu không làm.",
            explain_en="An official mailbox receives mail from a social network or e-banking "
            "service: the official address was used to register, which the directive forbids.",
            fix_vi="Đổi địa chỉ đăng ký dịch vụ sang hộp thư cá nhân.",
            fix_en="Move the service registration to a personal mailbox.",
            directive="Công văn số 289/UBND-VX ngày 16/4/2018 của UBND huyện Phú Giáo, mục 2: "
            "không sử dụng địa chỉ thư công vụ để đăng ký các dịch vụ trên mạng (mạng xã hội, "
            "ngân hàng điện tử…).",
        ),
        Reason(
            code="advisory.public_contact_in_body",
            action=Action.ACCEPT,
            smtp_code=250,
            enhanced="2.0.0",
            reply_vi="Van ban ghi dia chi thu ca nhan de lien he",
            reply_en="Official message prints a personal contact address",
            explain_vi="Thư từ hộp thư công vụ ghi địa chỉ thư cá nhân (gmail, yahoo…) để liên hệ.",
            explain_en="Mail from an official mailbox prints a personal (gmail, yahoo...) contact "
            "address.",
            fix_vi="Ghi địa chỉ thư công vụ trong văn bản và chữ ký thư.",
            fix_en="Print the official address in documents and signatures.",
            directive="Công văn số 289/UBND-VX ngày 16/4/2018 của UBND huyện Phú Giáo: một số văn "
            "bản vẫn còn ghi địa chỉ liên hệ qua thư điện tử công cộng (gmail, yahoo…).",
        ),
        Reason(
            code="sender.official_unauthenticated",
            action=Action.REJECT,
            smtp_code=550,
            enhanced="5.7.22",
            reply_vi="Thu mang ten mien cong vu nhung khong co chu ky DKIM hop le",
            reply_en="Official From domain without a valid aligned DKIM signature",
            explain_vi="Địa chỉ người gửi thuộc tên miền công vụ nhưng thư không có chữ ký DKIM "
            "hợp lệ của tên miền đó và không đến từ mạng nội bộ: có thể là thư giả mạo.",
            explain_en="The From address is in an official domain but the message has no valid "
            "DKIM signature of that domain and did not come from a trusted network: it may "
            "be forged.",
            fix_vi="Gửi từ máy chủ thư công vụ của đơn vị (máy chủ có ký DKIM).",
            fix_en="Send through your unit's official mail server (which signs with DKIM).",
            directive=_PHU_MY_1,
        ),
        Reason(
            code="sender.authentication_temperror",
            action=Action.TEMPFAIL,
            smtp_code=451,
            enhanced="4.4.3",
            reply_vi="Loi DNS tam thoi khi kiem tra DKIM, vui long gui lai sau",
            reply_en="Temporary DNS error while checking DKIM, try again later",
            explain_vi="Không tra cứu được khóa DKIM do lỗi DNS tạm thời; thư chưa được nhận.",
            explain_en="The DKIM key could not be looked up (temporary DNS error); nothing "
            "accepted.",
            fix_vi="Máy chủ thư của anh/chị sẽ tự gửi lại.",
            fix_en="Your mail server will retry by itself.",
            directive="",
        ),
        Reason(
            code="sender.personal_domain",
            action=Action.REJECT,
            smtp_code=550,
            enhanced="5.7.1",
            reply_vi="Van ban cong vu phai gui tu hop thu cong vu, khong dung thu ca nhan",
            reply_en="Official mail must be sent from an official mailbox, not a personal one",
            explain_vi=(
                "Thư gửi văn bản, báo cáo cho cơ quan nhà nước có địa chỉ người gửi thuộc nhà "
                "cung cấp thư cá nhân (gmail, yahoo, …). Văn bản gửi từ hộp thư cá nhân không "
                "được tiếp nhận và không được tính là gửi đúng thời gian."
            ),
            explain_en=(
                "The message to a government mailbox names a sender address at a personal mail "
                "provider (gmail, yahoo, ...). Documents sent from personal mailboxes are not "
                "received and do not count as sent on time."
            ),
            fix_vi="Gửi lại từ hộp thư công vụ của anh/chị (địa chỉ …@…gov.vn của đơn vị).",
            fix_en="Send it again from your official mailbox (your unit's …@…gov.vn address).",
            directive=_PHU_MY_1,
        ),
        Reason(
            code="sender.malformed_identity",
            action=Action.REJECT,
            smtp_code=550,
            enhanced="5.7.1",
            reply_vi="Thu thieu hoac co dia chi nguoi gui (From) khong ro rang",
            reply_en="Missing, multiple or ambiguous From address",
            explain_vi=(
                "Không xác định được chắc chắn người gửi: thư không có trường From, có nhiều "
                "trường From, hoặc địa chỉ From không đúng cú pháp hay hiển thị một địa chỉ "
                "khác với địa chỉ thật."
            ),
            explain_en=(
                "The sender cannot be told for certain: the message has no From field, several "
                "From fields, or a From address that does not parse or shows a different "
                "address than the real one."
            ),
            fix_vi="Gửi lại bằng phần mềm thư thông thường từ hộp thư công vụ của anh/chị.",
            fix_en="Send it again with an ordinary mail program from your official mailbox.",
            directive="RFC 5322 mục 3.6.2 (trường From xác định tác giả thư). " + _PHU_MY_1,
        ),
        Reason(
            code="sender.lookalike_domain",
            action=Action.REJECT,
            smtp_code=550,
            enhanced="5.7.1",
            reply_vi="Dia chi nguoi gui gia mao ten mien cong vu bang ky tu giong nhau",
            reply_en="Sender address imitates an official domain with look-alike letters",
            explain_vi=(
                "Tên miền của địa chỉ người gửi được viết bằng chữ cái của bảng chữ khác trông "
                "giống hệt chữ Latinh (ví dụ chữ о tiếng Nga trong lamdоng.gov.vn), để người "
                "đọc tưởng là tên miền công vụ."
            ),
            explain_en=(
                "The sender's domain is written with letters from another alphabet that look "
                "like Latin ones (a Cyrillic о in lamdоng.gov.vn, say), so that a reader takes "
                "it for an official domain."
            ),
            fix_vi="Gửi lại từ hộp thư công vụ thật của cơ quan.",
            fix_en="Send it again from the unit's real official mailbox.",
            directive="Unicode TR 39 (ký tự dễ nhầm lẫn). " + _PHU_MY_1,
        ),
        Reason(
            code="sender.address_in_local_part",
            action=Action.REJECT,
            smtp_code=550,
            enhanced="5.7.1",
            reply_vi="Dia chi nguoi gui chua mot dia chi khac trong phan ten",
            reply_en="Sender address holds another address in its local part",
            explain_vi=(
                "Phần tên (trước @) của địa chỉ người gửi là một địa chỉ khác đặt trong dấu "
                'ngoặc kép ("vanthu@lamdong.gov.vn"@...): một số phần mềm thư chỉ hiển thị '
                "địa chỉ đó, che tên miền thật."
            ),
            explain_en=(
                "The local part (before the @) of the sender's address is another address in "
                'quotes ("vanthu@lamdong.gov.vn"@...): some mail programs show only that '
                "address and hide the real domain."
            ),
            fix_vi="Gửi lại từ hộp thư công vụ của anh/chị với địa chỉ thông thường.",
            fix_en="Send it again from your official mailbox with an ordinary address.",
            directive="RFC 5322 mục 3.4.1. " + _PHU_MY_1,
        ),
        Reason(
            code="message.malformed_headers",
            action=Action.REJECT,
            smtp_code=550,
            enhanced="5.6.0",
            reply_vi="Phan tieu de thu sai cu phap",
            reply_en="Malformed header section",
            explain_vi=(
                "Phần tiêu đề thư có dòng không phải trường tiêu đề hợp lệ (thiếu dấu hai chấm, "
                "tên trường có ký tự lạ, ký tự NUL…). Các phần mềm thư có thể hiểu khác nhau "
                "về người gửi của thư như vậy."
            ),
            explain_en=(
                "The header section has a line that is not a valid header field (no colon, odd "
                "characters in the name, a NUL...). Mail programs may disagree on who sent "
                "such a message."
            ),
            fix_vi="Gửi lại bằng phần mềm thư thông thường.",
            fix_en="Send it again with an ordinary mail program.",
            directive="RFC 5322 mục 2.2 và 3.6 (cú pháp trường tiêu đề).",
        ),
        Reason(
            code="message.ambiguous_structure",
            action=Action.REJECT,
            smtp_code=550,
            enhanced="5.6.0",
            reply_vi="Cau truc thu doc duoc theo hai cach",
            reply_en="A part of the message reads two ways",
            explain_vi=(
                "Một phần của thư (thường là tệp đính kèm) được viết sao cho các phần mềm thư "
                "có thể đọc theo hai cách khác nhau: khoảng trắng trước dấu hai chấm của một "
                "trường, hai trường Content-Type, Content-Transfer-Encoding hay "
                "Content-Disposition, một tham số (tên tệp, boundary) khai báo hai lần, hoặc "
                "thư chuyển tiếp (message/rfc822) bị mã hóa base64. Cổng thư không đoán phần "
                "mềm của người nhận sẽ mở gì, nên trả lại thư."
            ),
            explain_en=(
                "A part of the message (usually an attachment) is written so that mail programs "
                "can read it two ways: a space before a field's colon, two Content-Type, "
                "Content-Transfer-Encoding or Content-Disposition fields, a parameter (file "
                "name, boundary) given twice, or a forwarded message (message/rfc822) in "
                "base64. The gateway does not guess what the recipient's program would open, "
                "so it returns the message."
            ),
            fix_vi="Gửi lại bằng phần mềm thư thông thường, đính kèm tệp theo cách thông thường.",
            fix_en="Send it again with an ordinary mail program, attaching the files as usual.",
            directive="RFC 2045 mục 3 và 6, RFC 2046 mục 5.2.1, RFC 2183.",
        ),
        Reason(
            code="message.partial",
            action=Action.REJECT,
            smtp_code=550,
            enhanced="5.6.1",
            reply_vi="Thu bi chia manh (message/partial) khong kiem tra duoc",
            reply_en="Message fragments (message/partial) cannot be checked",
            explain_vi=(
                "Thư là một mảnh của một thư lớn hơn (message/partial). Cổng thư không thấy "
                "được văn bản trong các mảnh, nên không kiểm tra được chữ ký số của chúng."
            ),
            explain_en=(
                "The message is a fragment of a larger one (message/partial). The gateway cannot "
                "see the documents split over fragments, so it cannot check their signatures."
            ),
            fix_vi="Gửi lại thư nguyên vẹn, không chia nhỏ (tắt tùy chọn chia thư lớn).",
            fix_en="Send it again whole, not split (turn off the option that splits large mail).",
            directive="RFC 2046 mục 5.2.2.",
        ),
        Reason(
            code="address.syntax",
            action=Action.REJECT,
            smtp_code=553,
            enhanced="5.1.3",
            reply_vi="Dia chi phong bi thu sai cu phap",
            reply_en="Envelope address syntax error",
            explain_vi=(
                "Địa chỉ trong lệnh MAIL FROM hoặc RCPT TO không đúng dạng ten@ten-mien, hoặc có "
                "ký tự điều khiển (CR, LF, NUL…) có thể bị máy chủ phía sau hiểu thành một lệnh "
                "khác."
            ),
            explain_en=(
                "The MAIL FROM or RCPT TO address is not of the form name@domain, or holds a "
                "control character (CR, LF, NUL...) that a server behind could read as another "
                "command."
            ),
            fix_vi="Kiểm tra lại địa chỉ người gửi và người nhận.",
            fix_en="Check the sender and recipient addresses.",
            directive="RFC 5321 mục 4.1.2 (cú pháp địa chỉ) và 2.3.8 (dòng lệnh).",
        ),
        Reason(
            code="address.non_ascii",
            action=Action.REJECT,
            smtp_code=553,
            enhanced="5.6.7",
            reply_vi="Dia chi co dau can tham so SMTPUTF8",
            reply_en="Non-ASCII address without SMTPUTF8",
            explain_vi="Địa chỉ có ký tự ngoài ASCII chỉ được dùng khi máy gửi khai báo SMTPUTF8.",
            explain_en="A non-ASCII address may only be used with the SMTPUTF8 parameter.",
            fix_vi="Dùng địa chỉ không dấu, hoặc phần mềm thư hỗ trợ SMTPUTF8.",
            fix_en="Use an ASCII address, or a mail program that supports SMTPUTF8.",
            directive="RFC 6531 mục 3.4.",
        ),
        Reason(
            code="message.too_large",
            action=Action.REJECT,
            smtp_code=552,
            enhanced="5.3.4",
            reply_vi="Thu vuot qua kich thuoc cho phep",
            reply_en="Message exceeds the size limit",
            explain_vi="Thư lớn hơn giới hạn kích thước của cổng thư.",
            explain_en="The message is larger than the gateway's size limit.",
            fix_vi="Giảm kích thước tệp đính kèm hoặc gửi qua hệ thống văn phòng điện tử.",
            fix_en="Make the attachments smaller or send them through the e-office system.",
            directive="",
        ),
        Reason(
            code="message.line_too_long",
            action=Action.REJECT,
            smtp_code=500,
            enhanced="5.5.2",
            reply_vi="Dong thu qua dai",
            reply_en="Line too long",
            explain_vi="Thư có dòng dài hơn 998 ký tự, trái với RFC 5321/5322.",
            explain_en="The message has a line longer than 998 characters (RFC 5321/5322).",
            fix_vi="Gửi lại bằng phần mềm thư thông thường.",
            fix_en="Send it again with an ordinary mail program.",
            directive="RFC 5321 mục 4.5.3.1.6.",
        ),
        Reason(
            code="message.too_many_recipients",
            action=Action.TEMPFAIL,
            smtp_code=452,
            enhanced="4.5.3",
            reply_vi="Qua nhieu nguoi nhan trong mot thu, gui phan con lai sau",
            reply_en="Too many recipients for one message, send the rest later",
            explain_vi="Một thư chỉ được gửi tới số người nhận giới hạn; máy gửi sẽ gửi phần còn "
            "lại trong thư khác.",
            explain_en="One message may have only so many recipients; the sending server sends the "
            "rest in another message.",
            fix_vi="Máy chủ thư của anh/chị sẽ tự gửi phần còn lại.",
            fix_en="Your mail server sends the rest by itself.",
            directive="RFC 5321 mục 4.5.3.1.8.",
        ),
        Reason(
            code="message.loop",
            action=Action.REJECT,
            smtp_code=554,
            enhanced="5.4.6",
            reply_vi="Thu bi lap vong (qua nhieu dong Received)",
            reply_en="Mail loop detected (too many Received headers)",
            explain_vi="Thư đã đi qua quá nhiều máy chủ: có vòng lặp chuyển tiếp.",
            explain_en="The message went through too many servers: a forwarding loop.",
            fix_vi="Báo quản trị thư kiểm tra chuyển tiếp tự động.",
            fix_en="Ask the mail admin to check automatic forwarding.",
            directive="RFC 5321 mục 6.3.",
        ),
        Reason(
            code="message.header_too_large",
            action=Action.REJECT,
            smtp_code=552,
            enhanced="5.3.4",
            reply_vi="Phan tieu de thu qua lon",
            reply_en="Header section too large",
            explain_vi="Phần tiêu đề thư vượt giới hạn kích thước hoặc số trường.",
            explain_en="The header section exceeds the size or field-count limit.",
            fix_vi="Gửi lại bằng phần mềm thư thông thường.",
            fix_en="Send it again with an ordinary mail program.",
            directive="",
        ),
        Reason(
            code="relay.denied",
            action=Action.REJECT,
            smtp_code=550,
            enhanced="5.7.1",
            reply_vi="Khong chuyen tiep thu den ten mien nay",
            reply_en="Relay access denied",
            explain_vi=(
                "Cổng thư chỉ nhận thư gửi đến các tên miền của đơn vị, hoặc từ mạng nội bộ "
                "được tin cậy."
            ),
            explain_en=(
                "The gateway only accepts mail for the district's own domains, or from its "
                "trusted networks."
            ),
            fix_vi="Kiểm tra lại địa chỉ người nhận.",
            fix_en="Check the recipient address.",
            directive="",
        ),
        Reason(
            code="downstream.smtputf8_unsupported",
            action=Action.REJECT,
            smtp_code=550,
            enhanced="5.6.7",
            reply_vi="May chu thu noi bo khong nhan dia chi Unicode",
            reply_en="The internal mail server does not support internationalised addresses",
            explain_vi="Máy chủ thư nội bộ không hỗ trợ SMTPUTF8 cho địa chỉ có dấu.",
            explain_en="The internal mail server does not support SMTPUTF8 addresses.",
            fix_vi="Dùng địa chỉ không dấu (ASCII).",
            fix_en="Use an ASCII address.",
            directive="",
        ),
        Reason(
            code="downstream.refused",
            action=Action.REJECT,
            smtp_code=550,
            enhanced="5.0.0",
            reply_vi="May chu thu noi bo tu choi thu",
            reply_en="The internal mail server refused the message",
            explain_vi="Máy chủ thư nội bộ từ chối thư; lý do là câu trả lời của máy chủ đó.",
            explain_en="The internal mail server refused; its own reply gives the reason.",
            fix_vi="Đọc lý do trong câu trả lời và liên hệ quản trị thư nếu cần.",
            fix_en="Read the reason in the reply and contact the mail admin if needed.",
            directive="",
        ),
        Reason(
            code="downstream.deferred",
            action=Action.TEMPFAIL,
            smtp_code=451,
            enhanced="4.0.0",
            reply_vi="May chu thu noi bo tam thoi chua nhan thu, vui long gui lai sau",
            reply_en="The internal mail server deferred the message, try again later",
            explain_vi="Máy chủ thư nội bộ tạm thời chưa nhận thư; thư chưa được nhận.",
            explain_en="The internal mail server deferred the message; nothing accepted.",
            fix_vi="Máy chủ thư của anh/chị sẽ tự gửi lại.",
            fix_en="Your mail server will retry by itself.",
            directive="",
        ),
        Reason(
            code="internal.check_error",
            action=Action.TEMPFAIL,
            smtp_code=451,
            enhanced="4.3.0",
            reply_vi="Loi tam thoi khi kiem tra thu, vui long gui lai sau",
            reply_en="Temporary error while checking the message, try again later",
            explain_vi="Cổng thư gặp lỗi nội bộ khi kiểm tra thư; thư chưa được nhận.",
            explain_en="The gateway hit an internal error while checking; nothing was accepted.",
            fix_vi="Máy chủ thư của anh/chị sẽ tự gửi lại.",
            fix_en="Your mail server will retry by itself.",
            directive="",
        ),
        Reason(
            code="store.unavailable",
            action=Action.TEMPFAIL,
            smtp_code=451,
            enhanced="4.3.0",
            reply_vi="Khong ghi duoc nhat ky quyet dinh, vui long gui lai sau",
            reply_en="Decision log unavailable, try again later",
            explain_vi="Mọi quyết định phải được ghi nhật ký trước khi trả lời; nhật ký đang lỗi.",
            explain_en="Every decision is logged before the reply; the log is failing.",
            fix_vi="Máy chủ thư của anh/chị sẽ tự gửi lại.",
            fix_en="Your mail server will retry by itself.",
            directive="",
        ),
        Reason(
            code="downstream.unavailable",
            action=Action.TEMPFAIL,
            smtp_code=451,
            enhanced="4.4.1",
            reply_vi="Khong ket noi duoc may chu thu noi bo, vui long gui lai sau",
            reply_en="Internal mail server unreachable, try again later",
            explain_vi="Cổng thư không kết nối được máy chủ thư nội bộ; thư chưa được nhận.",
            explain_en="The gateway could not reach the internal mail server; nothing accepted.",
            fix_vi="Máy chủ thư của anh/chị sẽ tự gửi lại.",
            fix_en="Your mail server will retry by itself.",
            directive="",
        ),
        Reason(
            code="downstream.unconfirmed",
            action=Action.TEMPFAIL,
            smtp_code=451,
            enhanced="4.4.2",
            reply_vi="May chu thu noi bo chua xac nhan, vui long gui lai sau (co the da nhan)",
            reply_en="No confirmation from the internal mail server, try again later "
            "(it may have the message)",
            explain_vi="Cổng thư đã chuyển trọn thư cho máy chủ thư nội bộ nhưng máy chủ không "
            "xác nhận kịp; có thể thư đã được nhận. Khi đó lần gửi lại tạo bản thứ hai, và bản "
            "ghi theo mã ref này giải thích bản thứ nhất.",
            explain_en="The whole message was handed to the internal mail server, which did not "
            "confirm it in time; it may have kept a copy. Your server's retry then makes a "
            "second copy, and the record under this ref explains the first.",
            fix_vi="Máy chủ thư của anh/chị sẽ tự gửi lại; người nhận có thể nhận hai bản.",
            fix_en="Your mail server will retry by itself; the recipient may get two copies.",
            directive="",
        ),
        Reason(
            code="downstream.lost",
            action=Action.TEMPFAIL,
            smtp_code=451,
            enhanced="4.4.2",
            reply_vi="Mat ket noi voi may chu thu noi bo, vui long gui lai sau",
            reply_en="Connection to the internal mail server lost, try again later",
            explain_vi="Kết nối tới máy chủ thư nội bộ bị ngắt giữa chừng; thư chưa được nhận.",
            explain_en="The connection to the internal mail server broke; nothing accepted.",
            fix_vi="Máy chủ thư của anh/chị sẽ tự gửi lại.",
            fix_en="Your mail server will retry by itself.",
            directive="",
        ),
    ]
}


def reply_for(code: str, help_contact: str = "") -> Reply:
    """The SMTP reply for ``code``: ``[code] vi / en Help: contact``, ASCII, within one line.

    The help contact (policy data, may be Vietnamese) is folded to ASCII and cut to fit.
    """
    reason = REASONS[code]
    text = f"[{reason.code}] {reason.reply_vi} / {reason.reply_en}"
    if help_contact:
        text += f". Help: {ascii_fold(help_contact)}"
    return Reply(reason.smtp_code, reason.enhanced, text)
