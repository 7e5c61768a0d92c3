"""The book-size port over the assignment service's GetBook (kequn.assignment.v1)."""
from __future__ import annotations

import grpc

from kequn.assignment.v1 import assignment_pb2, assignment_pb2_grpc
from services.common.errors import Unavailable

TIMEOUT_SECONDS = 10.0
DOWN_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED)


class AssignmentBooks:
    """book_size(staff_id) -> customers in the person's (locked) book, or None if
    assignment does not know the person. Assignment down -> Unavailable
    (DEPENDENCY_UNAVAILABLE, dependency=assignment); other failures propagate."""

    def __init__(self, channel: grpc.Channel):
        self.stub = assignment_pb2_grpc.AssignmentServiceStub(channel)

    def __call__(self, staff_id: str) -> int | None:
        book = self.book(staff_id)
        return None if book is None else int(book.size)

    def book(self, staff_id: str) -> assignment_pb2.Book | None:
        """The book's header (size, role, branch, locked), or None if assignment does not know the person."""
        try:
            return self.stub.GetBook(assignment_pb2.GetBookRequest(staff_id=staff_id, page_size=1),
                                     timeout=TIMEOUT_SECONDS)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            if exc.code() in DOWN_CODES:
                raise Unavailable(f"assignment cannot tell the book of {staff_id} ({exc.code().name})",
                                  metadata={"dependency": "assignment"}) from None
            raise
