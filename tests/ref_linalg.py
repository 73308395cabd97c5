"""Linear-algebra helpers shared by the PyTorch reference generators (tests/gen_*.py)."""
import torch


def svd_signed(G):
    """SVD of G with each singular pair's sign fixed (the largest |U| entry of a column positive),
    so that references and loqt agree on the sign ambiguity of singular vectors."""
    U, S, Vh = torch.linalg.svd(G, full_matrices=False)
    for i in range(U.shape[1]):
        j = int(torch.argmax(U[:, i].abs()))
        if U[j, i] < 0:
            U[:, i] = -U[:, i]
            Vh[i, :] = -Vh[i, :]
    return U, S, Vh
