package tinytags.solr;

import java.io.IOException;
import org.apache.lucene.codecs.KnnVectorsFormat;
import org.apache.lucene.codecs.KnnVectorsReader;
import org.apache.lucene.codecs.KnnVectorsWriter;
import org.apache.lucene.codecs.hnsw.FlatVectorScorerUtil;
import org.apache.lucene.codecs.lucene99.Lucene99FlatVectorsFormat;
import org.apache.lucene.index.SegmentReadState;
import org.apache.lucene.index.SegmentWriteState;

/**
 * Vectors written flat (Lucene99FlatVectorsFormat: the raw floats, no HNSW graph), under a name of
 * our own. Lucene does not register the flat format for SPI by itself, and a segment names each
 * field's vector format so that it can be read again: this class is that name
 * (META-INF/services/org.apache.lucene.codecs.KnnVectorsFormat), so it must be on the classpath of
 * Lucene itself (the JVM's, or Solr's WEB-INF/lib), not only in a core's lib folder.
 *
 * <p>Exact scoring ({!func}vectorSimilarity) reads these vectors as it reads HNSW ones; k-NN
 * ({!knn}) finds nothing here, since a flat reader's search() is empty.
 */
public final class FlatVectorsFormat extends KnnVectorsFormat {

  /** The name segments record; changing it makes existing segments unreadable. */
  public static final String NAME = "TinyTagsFlat99";

  private final KnnVectorsFormat flat =
      new Lucene99FlatVectorsFormat(FlatVectorScorerUtil.getLucene99FlatVectorsScorer());

  /** Public no-argument constructor: SPI loads the format by name when a segment is read. */
  public FlatVectorsFormat() {
    super(NAME);
  }

  @Override
  public KnnVectorsWriter fieldsWriter(SegmentWriteState state) throws IOException {
    return flat.fieldsWriter(state);
  }

  @Override
  public KnnVectorsReader fieldsReader(SegmentReadState state) throws IOException {
    return flat.fieldsReader(state);
  }

  @Override
  public int getMaxDimensions(String fieldName) {
    return flat.getMaxDimensions(fieldName);
  }

  @Override
  public String toString() {
    return NAME + "(" + flat + ")";
  }
}
